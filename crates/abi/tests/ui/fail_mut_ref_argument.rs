use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check(ctx: &mut QueryContext) -> PreQueryResult {
    ctx.query.clear();
    PreQueryResult::Continue
}

fn main() {}
