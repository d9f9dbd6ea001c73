//! Prints the facts of each argument as JSON: `cargo run -p helios-plugin-facts --features pg,guest
//! --example facts -- "SELECT 1"` (host extraction; `--guest` first for the sqlparser one).

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let guest = args.first().is_some_and(|a| a == "--guest");
    if guest {
        args.remove(0);
    }
    for sql in args {
        let facts = if guest { guest_facts(&sql) } else { host_facts(&sql) };
        println!("{}", serde_json::to_string_pretty(&facts).unwrap_or_default());
    }
}

#[cfg(feature = "pg")]
fn host_facts(sql: &str) -> helios_plugin_facts::StatementFacts {
    helios_plugin_facts::pg::extract(sql)
}
#[cfg(not(feature = "pg"))]
fn host_facts(_: &str) -> helios_plugin_facts::StatementFacts {
    panic!("build with --features pg")
}
#[cfg(feature = "guest")]
fn guest_facts(sql: &str) -> helios_plugin_facts::StatementFacts {
    helios_plugin_facts::guest::extract(sql)
}
#[cfg(not(feature = "guest"))]
fn guest_facts(_: &str) -> helios_plugin_facts::StatementFacts {
    panic!("build with --features guest")
}
