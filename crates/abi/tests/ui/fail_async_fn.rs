use helios_plugin_abi::*;

#[hook(PreQuery)]
async fn check(_ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
