use helios_plugin_abi::*;

#[hook(Route)]
fn route(_ctx: QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}

fn main() {}
