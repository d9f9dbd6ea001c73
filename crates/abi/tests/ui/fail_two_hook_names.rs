use helios_plugin_abi::*;

#[hook(PreQuery, Route)]
fn check(_ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
