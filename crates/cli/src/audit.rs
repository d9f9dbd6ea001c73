//! `helios-plugin audit verify <file>`: checks an exported audit-chain (one `audit-record` JSON per
//! line) and names the first broken link. Exit 0 intact, 1 broken, 2 unreadable.

use std::path::PathBuf;

use audit_chain_verify::chain::LOG_PREFIX;

use anyhow::{Context, Result};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify an exported chain (NDJSON; lines may keep their `audit-record ` log prefix).
    Verify {
        /// The exported chain.
        file: PathBuf,
        /// The genesis hash the plugin was configured with (default: accept any on record 1).
        #[arg(long)]
        genesis: Option<String>,
    },
}

pub fn run(args: AuditArgs) -> Result<i32> {
    let AuditCommand::Verify { file, genesis } = args.command;
    let text = match std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display())) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let ndjson: String = text
        .lines()
        .map(|l| l.find(LOG_PREFIX).map(|i| &l[i + LOG_PREFIX.len()..]).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let opts = audit_chain_verify::VerifyOptions { genesis, ..Default::default() };
    match audit_chain_verify::verify_chain_with(&ndjson, &opts) {
        Ok(n) => {
            println!("{}: {n} records, every link intact", file.display());
            Ok(0)
        }
        Err(e) => {
            println!("{}: {e}", file.display());
            Ok(1)
        }
    }
}
