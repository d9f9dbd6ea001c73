//! token-budget (in progress)
