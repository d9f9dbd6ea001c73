//! `helios-plugin`: write, sign, ship and call sandboxed WebAssembly plugins.
//!
//! This file is also the body of `cargo-helios-plugin` (`src/bin/cargo-helios-plugin.rs`), so
//! `cargo helios-plugin sign ...` and `helios-plugin sign ...` are the same command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use helios_plugin_cli as cli;

mod audit;
mod call;
mod fixtures;
mod new;
mod oci;
mod state;
mod status;

#[derive(Debug, Parser)]
#[command(
    name = "helios-plugin",
    version,
    about = "Sign, pack, inspect, verify and call helios-plugin WebAssembly plugins"
)]
#[command(after_help = cli::exit_code_table())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an Ed25519 key pair (PKCS#8 PEM private key, PEM and base64 public keys).
    Keygen(cli::KeygenArgs),
    /// Sign a module (writes its .sig sidecar) or an artefact (module and manifest, in place).
    Sign(cli::SignArgs),
    /// Pack a module, its manifest and signature into a .tar.gz artefact.
    Pack(cli::PackArgs),
    /// Show what an artefact holds, without trusting it.
    Inspect(cli::InspectArgs),
    /// Verify an artefact or manifest directory against a trust root; exit 0 only if it passes.
    Verify(cli::VerifyArgs),
    /// Run one hook or guard of a module on a JSON input.
    Call(call::CallArgs),
    /// Check an exported audit-chain trail and name the first broken link.
    Audit(audit::AuditArgs),
    /// Inspect or fix a plugin's KV state in a SQLite file or on a Redis server.
    State(state::StateArgs),
    /// Create a plugin crate that builds, tests and packs out of the box.
    New(new::NewArgs),
    /// Run fixture files (hook fixtures or chio canaries) against a module or artefact.
    Test(fixtures::TestArgs),
    /// Push an artefact to an OCI registry (oras-compatible layout).
    Push(oci::PushArgs),
    /// Pull an artefact from an OCI registry.
    Pull(oci::PullArgs),
    /// Show the plugins a running host has loaded (its admin listener's /plugins) as a table.
    Status(status::StatusArgs),
}

pub fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELIOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let args = cli::args_without_cargo_prefix(std::env::args_os().collect());
    let parsed = Cli::parse_from(args);
    let result = match parsed.command {
        Command::Keygen(a) => cli::keygen(a),
        Command::Sign(a) => cli::sign(a),
        Command::Pack(a) => cli::pack(a),
        Command::Inspect(a) => cli::inspect(a),
        Command::Verify(a) => cli::verify(a),
        Command::Call(a) => call::run(a),
        Command::Audit(a) => audit::run(a),
        Command::State(a) => state::run(a),
        Command::New(a) => new::run(a),
        Command::Test(a) => fixtures::run(a),
        Command::Push(a) => oci::push(a),
        Command::Pull(a) => oci::pull(a),
        Command::Status(a) => status::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(u8::try_from(cli::exit_code_of(&e)).unwrap_or(1))
        }
    }
}
