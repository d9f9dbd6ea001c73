use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check(_ctx: &QueryContext, _extra: u32) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
