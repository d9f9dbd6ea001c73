use helios_plugin_abi::*;

#[hook]
fn check(_ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
