//! Integration tests of helios-proxy against real PostgreSQL 15 clusters (no mocks).

mod support;

mod harness;
mod simple;
mod extended;
mod faults;
mod first_party;
mod pgbench;
mod plugins;
