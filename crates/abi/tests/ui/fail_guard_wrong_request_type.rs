use helios_plugin_abi::*;

#[chio_guard]
fn evaluate(_req: &QueryContext) -> GuardVerdict {
    GuardVerdict::Allow
}

fn main() {}
