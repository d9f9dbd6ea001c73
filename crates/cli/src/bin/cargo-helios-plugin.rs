//! `cargo helios-plugin ...`: cargo runs this binary with `helios-plugin` as its first argument;
//! the shared `main` drops it, so every subcommand works as with `helios-plugin`.

#[path = "../main.rs"]
mod helios_plugin_main;

fn main() -> std::process::ExitCode {
    helios_plugin_main::main()
}
