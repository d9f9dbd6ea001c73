//! Integration tests of helios-proxy against real PostgreSQL 15 clusters (no mocks).

mod support;

mod admin;
mod drivers;
mod extended;
mod faults;
mod first_party;
mod harness;
mod limits;
mod ops;
mod page_flow;
mod pgbench;
mod pgexact;
mod plugins;
mod reload;
mod simple;
mod slow;
mod state;
mod tls;
