use helios_plugin_abi::*;

#[hook(PreQuery)]
struct Check;

fn main() {}
