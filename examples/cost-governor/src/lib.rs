//! cost-governor: per-tenant cost budgets per minute, hour and day for HeliosProxy.
//!
//! `post_query` charges each statement's cost (elapsed time and response size, with configurable
//! weights) to its tenant; `pre_query` blocks a tenant whose budget is used up in any window, naming
//! the window and when it resets. Windows are aligned on the host clock (`get_time`). See README.md.

pub mod governor;
pub mod ledger;
