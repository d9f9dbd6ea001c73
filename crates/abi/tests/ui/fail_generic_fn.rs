use helios_plugin_abi::*;

#[hook(PreQuery)]
fn check<T: Default>(_ctx: &QueryContext) -> PreQueryResult {
    let _ = T::default();
    PreQueryResult::Continue
}

fn main() {}
