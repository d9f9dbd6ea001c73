use helios_plugin_abi::*;
#[hook(PreQuery)]
fn check_query(ctx: &HookContext) -> PreQueryResult {
if ctx.sql.to_uppercase().contains("DROP TABLE") {
return PreQueryResult::Block { reason: "DROP forbidden".into() };
}
PreQueryResult::Continue
}

// Above: the HeliosProxy page's my-plugin/src/lib.rs, byte for byte (the page shows it unindented).
// Below: what a plugin's own native test does with it.
fn main() {
    let drop = HookContext { sql: "drop table users".into(), ..Default::default() };
    assert!(matches!(check_query(&drop), PreQueryResult::Block { .. }));
    assert!(matches!(check_query(&HookContext::default()), PreQueryResult::Continue));
}
