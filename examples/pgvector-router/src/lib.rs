//! pgvector-router (in progress)
