use helios_plugin_abi::*;

#[chio_guard]
extern "C" fn evaluate(_req: GuardRequest) -> GuardVerdict {
    GuardVerdict::Allow
}

fn main() {}
