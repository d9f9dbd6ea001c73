use helios_plugin_abi::*;

#[chio_guard]
fn evaluate(_req: &GuardRequest) {}

fn main() {}
