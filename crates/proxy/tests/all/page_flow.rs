//! The HeliosProxy plugin page, end to end, as its reader types it: the page's `my-plugin/src/lib.rs`
//! built for `wasm32-wasip1`, `cargo helios-plugin sign --key signing.pem --input …`, `helios-plugin
//! pack … --hooks pre_query`, `oras push` (the oras Python SDK) to a registry, a `proxy.toml` with
//! `source = "oci://…"` and `verify_with`, then a `DROP TABLE` through helios-proxy in front of a real
//! PostgreSQL, refused by the plugin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use helios_plugin_oci::testing::LoopbackRegistry;

use crate::support::pg::{self, PgCluster};
use crate::support::proxy::config_text;
use crate::support::{stderr, stdout};

/// The page's lib.rs, byte for byte: the SDK's trybuild pass case holds it (followed by a `main`
/// that is not part of the page).
fn page_lib_rs() -> &'static str {
    let case = include_str!("../../../abi/tests/ui/pass_heliosproxy_page.rs");
    case.split("\n\n// Above:").next().expect("the pass case opens with the page's code")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Where cargo put this test binary's sibling binaries (`helios-plugin`, `cargo-helios-plugin`):
/// `target/debug`, built by the same `cargo test` (the workspace's, or one selecting the CLI).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.join("helios-plugin").is_file() && dir.join("cargo-helios-plugin").is_file(),
        "the helios-plugin CLI is not built in {} (run the tests with -p helios-plugin-cli or --workspace)",
        dir.display()
    );
    dir
}

/// Runs `program args` in `dir` with the CLI's directory first on PATH (so `cargo helios-plugin`
/// finds `cargo-helios-plugin`, as after `cargo install`), failing with its output if it fails.
#[track_caller]
fn step(dir: &Path, program: &str, args: &[&str]) -> Output {
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed:\n{}\n{}", stdout(&out), stderr(&out));
    out
}

/// Starts `helios-proxy --config <path>` (OCI sources pulled into `oci_cache`) and waits until it
/// listens on `port`.
fn start_proxy(config: &Path, oci_cache: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(config)
        .env("HELIOS_OCI_CACHE", oci_cache)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start helios-proxy");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
            panic!("helios-proxy exited early ({status}): {log}");
        }
        assert!(Instant::now() < deadline, "helios-proxy did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn the_pages_plugin_built_for_wasip1_signed_packed_pushed_with_oras_and_loaded_from_oci_blocks_drop_table() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    // my-plugin/src/lib.rs, and a Cargo.toml depending on this repository's SDK by path.
    let krate = d.join("my-plugin");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("src/lib.rs"), page_lib_rs()).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"my-plugin\"\nversion = \"1.0.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nhelios-plugin-abi = {{ path = \"{}\" }}\n\n[workspace]\n",
            workspace().join("crates/abi").display()
        ),
    )
    .unwrap();
    // The workspace's lock pins the same versions: an offline build from the local registry cache.
    std::fs::copy(workspace().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    // cargo build --release --target wasm32-wasi (today's name: wasm32-wasip1). One target directory
    // under the workspace's, kept between runs (not the workspace's own: `cargo test` holds its lock).
    let target = helios_plugin_test_support::target_dir().join("scaffolded");
    let build = Command::new(&cargo)
        .args(["build", "--release", "--target", helios_plugin_test_support::WASI_GUEST_TARGET, "--offline"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "cargo build: {}", stderr(&build));
    let wasm = target.join(helios_plugin_test_support::WASI_GUEST_TARGET).join("release/my_plugin.wasm");
    let wasm = wasm.to_str().unwrap();

    // cargo helios-plugin sign --key signing.pem --input target/wasm32-wasi/release/my_plugin.wasm
    step(d, "helios-plugin", &["keygen", "--out", "signing.pem"]);
    let signed = step(d, &cargo, &["helios-plugin", "sign", "--key", "signing.pem", "--input", wasm]);
    assert!(stdout(&signed).contains("signed my-plugin 1.0.0"), "{}", stdout(&signed));
    // helios-plugin pack --wasm … --out my-plugin-1.0.0.tar.gz --name my-plugin --version 1.0.0 --hooks pre_query
    step(
        d,
        "helios-plugin",
        &[
            "pack",
            "--wasm",
            wasm,
            "--out",
            "my-plugin-1.0.0.tar.gz",
            "--name",
            "my-plugin",
            "--version",
            "1.0.0",
            "--hooks",
            "pre_query",
        ],
    );
    let keys = d.join("plugin-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(d.join("signing.pub"), keys.join("signing.pub")).unwrap();

    // oras push registry.example.com/my-org/my-plugin:1.0.0 my-plugin-1.0.0.tar.gz
    let reg_dir = d.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg = LoopbackRegistry::start(&reg_dir).unwrap_or_else(|e| panic!("registry: {e}"));
    let oras_push = "import sys, oras.client\n\
        oras.client.OrasClient(hostname=sys.argv[1], insecure=True).push(files=[sys.argv[3]], target=sys.argv[2])";
    let target_ref = format!("{}/my-org/my-plugin:1.0.0", reg.addr);
    step(d, "python3", &["-c", oras_push, &reg.addr, &target_ref, "my-plugin-1.0.0.tar.gz"]);

    // proxy.toml, the page's [[plugins]] entry with the loopback registry's address.
    let db = PgCluster::start();
    let port = pg::free_port();
    let plugins = format!(
        "\n[[plugins]]\nname = \"my-plugin\"\nsource = \"oci://{target_ref}\"\nhooks = [\"pre_query\"]\nverify_with = \"{}\"\n",
        keys.display()
    );
    let cfg = config_text(&[("primary", db.port(), "primary")], "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &plugins;
    let config = d.join("proxy.toml");
    std::fs::write(&config, cfg).unwrap();
    let mut proxy = start_proxy(&config, &d.join("oci-cache"), port);

    let out = pg::psql_raw(port, pg::SUPERUSER, "postgres", "CREATE TABLE t (x int);", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pg::psql_raw(port, pg::SUPERUSER, "postgres", "DROP TABLE t;\nSELECT count(*) FROM t;", &[]);
    assert!(stderr(&out).contains("42000") && stderr(&out).contains("DROP forbidden"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0", "the table is still there: {}", stderr(&out));
    let direct = pg::psql_raw(
        db.port(),
        pg::SUPERUSER,
        "postgres",
        "SELECT count(*) FROM pg_tables WHERE tablename = 't';",
        &[],
    );
    assert_eq!(stdout(&direct), "1");

    let _ = proxy.kill();
    let _ = proxy.wait();
}
