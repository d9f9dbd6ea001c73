//! `helios-plugin push` and `pull` against a real registry (Debian's `docker-registry` on a loopback
//! port, started and stopped by each test), and the `oras` Python SDK on the other side.

use std::path::Path;
use std::process::Command;

use helios_plugin_oci::testing::LoopbackRegistry;

use super::{fails, hp, ok, trust_dir_with, write_plugin};

/// A signed artefact `p.tar.gz` (plugin `p` 1.0.0, pre_query) and the trust root `keys/`.
fn signed_artefact(d: &Path) {
    write_plugin(d, &["pre_query"]);
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "plugin.wasm",
            "--name",
            "p",
            "--version",
            "1.0.0",
            "--hooks",
            "pre_query",
            "--key",
            "signing.pem",
            "--out",
            "p.tar.gz",
        ],
    ));
    trust_dir_with(d, "keys", &["signing.pub"]);
}

fn registry(d: &Path) -> LoopbackRegistry {
    let dir = d.join("registry");
    std::fs::create_dir_all(&dir).unwrap();
    LoopbackRegistry::start(&dir).unwrap_or_else(|e| panic!("the loopback registry starts: {e}"))
}

/// The `sha256:…` digest a push printed.
fn digest_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest "))
        .unwrap_or_else(|| panic!("no digest line in {stdout}"))
        .trim()
        .to_owned()
}

#[test]
fn push_then_pull_by_tag_and_by_digest_round_trips_an_artefact_that_still_verifies_and_oras_pulls_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    signed_artefact(d);
    let reg = registry(d);
    let tag = format!("oci://{}/my-org/p:1.0.0", reg.addr);
    let pushed = ok(hp(d, &["push", "p.tar.gz", &tag, "--plain-http"]));
    let digest = digest_of(&pushed.stdout);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let pin = format!("oci://{}/my-org/p@{digest}", reg.addr);
    assert!(pushed.stdout.contains(&format!("pin it as {pin}")), "{}", pushed.stdout);

    let original = std::fs::read(d.join("p.tar.gz")).unwrap();
    for (reference, out) in [(&tag, "by-tag.tar.gz"), (&pin, "by-digest.tar.gz")] {
        let pulled = ok(hp(d, &["pull", reference, "--plain-http", "--out", out]));
        assert!(pulled.stdout.contains(&format!("digest {digest}")), "{}", pulled.stdout);
        assert_eq!(std::fs::read(d.join(out)).unwrap(), original, "{reference}: the same bytes come back");
        let v = ok(hp(d, &["verify", out, "--trust-root", "keys"]));
        assert!(v.stdout.contains("verified p 1.0.0"), "{}", v.stdout);
    }

    // oras (the Python SDK, as a user of the page would) pulls what we pushed, under its file name.
    let oras_out = d.join("oras-out");
    let script = "import sys, oras.client\noras.client.OrasClient(hostname=sys.argv[1], insecure=True).pull(target=sys.argv[2], outdir=sys.argv[3])";
    let o = Command::new("python3")
        .args(["-c", script, &reg.addr, &format!("{}/my-org/p:1.0.0", reg.addr), oras_out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "oras pull: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(oras_out.join("p.tar.gz")).unwrap(), original);
}

#[test]
fn push_and_pull_failures_name_the_reference_the_registry_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    signed_artefact(d);
    let mut reg = registry(d);
    let tag = format!("oci://{}/my-org/p:1.0.0", reg.addr);

    // Not an artefact: refused before anything is uploaded.
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    let r = hp(d, &["push", "notes.txt", &tag, "--plain-http"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("notes.txt"), "{}", r.stderr);
    fails(hp(d, &["pull", &tag, "--plain-http", "--out", "x.tar.gz"]), 1, "E_OCI_REGISTRY");

    // A digest cannot be pushed to; a reference without a repository is not a reference.
    let pinned = format!("oci://{}/my-org/p@sha256:{}", reg.addr, "a".repeat(64));
    fails(hp(d, &["push", "p.tar.gz", &pinned, "--plain-http"]), 1, "push needs a tag");
    fails(hp(d, &["push", "p.tar.gz", "oci://my-plugin", "--plain-http"]), 1, "E_OCI_REFERENCE");

    // TLS against a plain-HTTP registry fails naming the registry.
    let e = fails(hp(d, &["push", "p.tar.gz", &tag]), 1, "E_OCI_REGISTRY");
    assert!(e.stderr.contains(&reg.addr), "{}", e.stderr);

    // An unknown tag and an unknown digest name the reference.
    ok(hp(d, &["push", "p.tar.gz", &tag, "--plain-http"]));
    let missing = format!("oci://{}/my-org/p:9.9.9", reg.addr);
    let e = fails(hp(d, &["pull", &missing, "--plain-http", "--out", "x.tar.gz"]), 1, "E_OCI_REGISTRY");
    assert!(e.stderr.contains(&missing), "{}", e.stderr);
    let e = fails(hp(d, &["pull", &pinned, "--plain-http", "--out", "x.tar.gz"]), 1, &pinned);
    assert!(e.stderr.contains("E_OCI"), "{}", e.stderr);
    assert!(!d.join("x.tar.gz").exists(), "a failed pull writes nothing");

    // A stopped registry: the pull fails naming it.
    reg.stop();
    let e = fails(hp(d, &["pull", &tag, "--plain-http", "--out", "x.tar.gz"]), 1, "E_OCI_REGISTRY");
    assert!(e.stderr.contains(&reg.addr), "{}", e.stderr);
}
