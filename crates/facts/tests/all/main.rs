//! The facts crate's integration tests, one binary: PostgreSQL's parser on the statements the
//! policies decide on (`pg`), and the differential run of both extractors over the corpus and the
//! bypass sets (`differential`, which needs both features).

mod differential;
mod pg;
