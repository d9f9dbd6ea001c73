use helios_plugin_abi::*;

#[chio_guard(strict)]
fn evaluate(_req: &GuardRequest) -> GuardVerdict {
    GuardVerdict::Allow
}

fn main() {}
