use helios_plugin_abi::*;

#[hook(PreQeury)]
fn check(_ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
