use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check() -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
