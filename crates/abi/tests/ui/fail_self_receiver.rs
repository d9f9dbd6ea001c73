use helios_plugin_abi::*;

struct Plugin;

impl Plugin {
    #[hook(PreQuery)]
    fn check(&self, _ctx: &QueryContext) -> PreQueryResult {
        PreQueryResult::Continue
    }
}

fn main() {}
