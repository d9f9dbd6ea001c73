//! Admin listener tests against real clients: a Prometheus server scraping `/metrics`, `promtool`,
//! and plain HTTP/1.1 requests for `/plugins` and the token rules.

mod listener;
mod prometheus;
mod support;
