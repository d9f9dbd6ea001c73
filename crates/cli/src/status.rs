//! `helios-plugin status --admin URL [--token-file FILE] [--json]`: the plugins a running host
//! (helios-proxy, the MCP gateway) has loaded, from its admin listener's `/plugins`, as a table.

use std::path::PathBuf;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin listener, e.g. http://127.0.0.1:9187
    #[arg(long)]
    pub admin: String,
    /// A file holding the bearer token (needed when the listener is not on loopback).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the JSON the listener returned instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let token = a.token_file.as_deref().map(helios_plugin_admin::read_token).transpose()?;
    let plugins = helios_plugin_admin::status::fetch(&a.admin, token.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
    } else {
        print!("{}", helios_plugin_admin::status::table(&plugins));
    }
    Ok(0)
}
