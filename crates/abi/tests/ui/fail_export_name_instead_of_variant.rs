use helios_plugin_abi::*;

#[hook(pre_query)]
fn check(_ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
