//! column-mask (in progress)
