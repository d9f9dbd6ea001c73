//! helios-plugin-state's integration tests: every backend against real stores (a SQLite file in a
//! temp dir, a Debian `redis-server` started on loopback), through the host where a guest is involved.

mod atomic;
mod failure;
mod imports;
mod isolation;
mod support;
