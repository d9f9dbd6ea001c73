//! End-to-end tests of the first-party plugins through the host (in progress)
