//! helios-proxy: a PostgreSQL wire-protocol proxy that runs helios-plugin hooks on every statement.
