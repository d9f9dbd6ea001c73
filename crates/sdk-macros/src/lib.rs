//! Procedural macros of the helios-plugin guest SDK: `#[hook(Name)]` and `#[chio_guard]`.
//! Use them through `helios-plugin-abi`, which re-exports them.
//!
//! (Bootstrap version: passes the function through unchanged.)

use proc_macro::TokenStream;

#[proc_macro_attribute]
pub fn hook(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

#[proc_macro_attribute]
pub fn chio_guard(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
