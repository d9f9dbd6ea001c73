use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check(_ctx: &QueryContext) {}

fn main() {}
