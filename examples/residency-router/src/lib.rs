//! residency-router (in progress)
