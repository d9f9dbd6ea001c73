//! End-to-end tests: every first-party plugin's wasm build through the host.

mod budgets;
mod corpus;
mod facts;
mod fuel;
mod observers;
mod rewriters;
mod routers;
mod support;
