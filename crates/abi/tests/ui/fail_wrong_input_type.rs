use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check(_env: &PostQueryEnvelope) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
