//! The facts crate's integration tests, one binary: PostgreSQL's parser on the statements the
//! policies decide on (`pg`), and the differential run of both extractors over the corpus and the
//! bypass sets (`differential`, which needs both features), and the facts cache's shape key against
//! fresh extractions over literal variants of the same inputs (`cache`).

mod cache;
mod differential;
mod pg;
