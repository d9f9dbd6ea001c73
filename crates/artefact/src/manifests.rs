//! Reading and checking `guard-manifest.yaml` and `manifest.json`. Errors name the file and the
//! field.

use helios_plugin_schema::manifest::{
    ARTEFACT_SCHEMA_VERSION, ArtefactManifest, GUARD_WIT_WORLD, GuardManifest, SIGNATURE_ALGORITHM,
    SUPPORTED_ABI_VERSIONS,
};

use crate::error::{Error, ErrorKind, Result, err};

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;

fn field_err(file: &str, field: &str, reason: impl std::fmt::Display) -> Error {
    err(ErrorKind::ManifestInvalid, format!("manifest {file} field {field}: {reason}"))
}

/// A plugin name: 1 to 128 of `A-Z a-z 0-9 - _ .`, not starting with `.`. Names travel inside signed
/// messages (newline-separated), log lines and KV namespaces, so nothing else is allowed.
pub fn check_name(name: &str, file: &str, field: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(field_err(file, field, format!("{name:?} is not a plugin name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ .)")))
    }
}

/// A version: 1 to 64 of `A-Z a-z 0-9 . + - _` (semver fits).
pub fn check_version(version: &str, file: &str, field: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(field_err(
            file,
            field,
            format!("{version:?} is not a version (1 to {MAX_VERSION_LEN} of A-Z a-z 0-9 . + - _)"),
        ))
    }
}

/// 64 lowercase hex digits.
pub fn check_sha256(value: &str, file: &str, field: &str) -> Result<()> {
    if value.len() == 64 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(field_err(file, field, format!("expected 64 lowercase hex digits, found {value:?}")))
    }
}

/// Each bundle is a content id: `sha256:` and 64 lowercase hex digits.
fn check_bundles(bundles: &[String], file: &str) -> Result<()> {
    for id in bundles {
        let hex = id.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(field_err(
                file,
                "bundles",
                format!("expected \"sha256:\" and 64 lowercase hex digits, found {id:?}"),
            ));
        }
    }
    Ok(())
}

/// Parses and checks a `guard-manifest.yaml`.
pub fn parse_guard_manifest(bytes: &[u8], file: &str) -> Result<GuardManifest> {
    let m: GuardManifest = serde_norway::from_slice(bytes)
        .map_err(|e| err(ErrorKind::ManifestInvalid, format!("manifest {file}: {e}")))?;
    check_name(&m.name, file, "name")?;
    check_version(&m.version, file, "version")?;
    if !SUPPORTED_ABI_VERSIONS.contains(&m.abi_version.as_str()) {
        let supported: Vec<_> = SUPPORTED_ABI_VERSIONS.iter().map(|v| format!("{v:?}")).collect();
        return Err(field_err(
            file,
            "abi_version",
            format!("{:?} is not supported (supported: {})", m.abi_version, supported.join(", ")),
        ));
    }
    if m.wasm_path.trim().is_empty() {
        return Err(field_err(file, "wasm_path", "is empty"));
    }
    check_sha256(&m.wasm_sha256, file, "wasm_sha256")?;
    if let Some(world) = &m.wit_world
        && world != GUARD_WIT_WORLD
    {
        return Err(field_err(file, "wit_world", format!("expected {GUARD_WIT_WORLD:?}, found {world:?}")));
    }
    for id in &m.bundles {
        let hex = id.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(field_err(
                file,
                "bundles",
                format!("expected \"sha256:\" and 64 lowercase hex digits, found {id:?}"),
            ));
        }
    }
    if let Some(key) = &m.signer_public_key {
        crate::keys::public_key_from_hex(key, &format!("manifest {file} field signer_public_key"))
            .map_err(|e| err(ErrorKind::ManifestInvalid, e.message().to_string()))?;
    }
    Ok(m)
}

/// Parses and checks an artefact's `manifest.json`.
pub fn parse_artefact_manifest(bytes: &[u8], file: &str) -> Result<ArtefactManifest> {
    let m: ArtefactManifest =
        serde_json::from_slice(bytes).map_err(|e| err(ErrorKind::ManifestInvalid, format!("manifest {file}: {e}")))?;
    if m.schema_version != ARTEFACT_SCHEMA_VERSION {
        return Err(field_err(
            file,
            "schema_version",
            format!("{:?} is not supported (supported: {ARTEFACT_SCHEMA_VERSION:?})", m.schema_version),
        ));
    }
    check_name(&m.name, file, "name")?;
    check_version(&m.version, file, "version")?;
    check_sha256(&m.wasm_sha256, file, "wasm_sha256")?;
    if let Some(s) = &m.signature_sha256 {
        check_sha256(s, file, "signature_sha256")?;
    }
    check_bundles(&m.bundles, file)?;
    if m.signature_algorithm != SIGNATURE_ALGORITHM {
        return Err(field_err(
            file,
            "signature_algorithm",
            format!("{:?} is not supported (supported: {SIGNATURE_ALGORITHM:?})", m.signature_algorithm),
        ));
    }
    Ok(m)
}

/// The bytes `pack` writes for a manifest: pretty JSON and a final newline.
pub fn artefact_manifest_bytes(m: &ArtefactManifest) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(m).expect("a manifest serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: pii-scanner\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: pii.wasm\n\
        wasm_sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
        config:\n  threshold: \"0.8\"\n  mode: strict\nhooks: [pre_query]\n";

    #[test]
    fn a_bundle_that_is_not_a_sha256_content_id_is_refused_naming_the_field() {
        let ok = format!("{GOOD}bundles: [\"sha256:{}\"]\n", "ab".repeat(32));
        assert_eq!(parse_guard_manifest(ok.as_bytes(), "m.yaml").unwrap().bundles.len(), 1);
        let bad = format!("{GOOD}bundles: [\"md5:abc\"]\n");
        let e = parse_guard_manifest(bad.as_bytes(), "m.yaml").unwrap_err().to_string();
        assert!(e.contains("field bundles") && e.contains("md5:abc"), "{e}");
    }

    #[test]
    fn the_documented_guard_manifest_parses() {
        let m = parse_guard_manifest(GOOD.as_bytes(), "guard-manifest.yaml").unwrap();
        assert_eq!(m.name, "pii-scanner");
        assert_eq!(m.config["mode"], "strict");
        assert!(!m.allow_unsigned);
        assert_eq!(m.hooks, vec![helios_plugin_schema::Hook::PreQuery]);
    }

    #[test]
    fn abi_version_2_is_refused_naming_file_and_field() {
        let bad = GOOD.replace("abi_version: \"1\"", "abi_version: \"2\"");
        let e = parse_guard_manifest(bad.as_bytes(), "guard-manifest.yaml").unwrap_err().to_string();
        assert!(e.contains("guard-manifest.yaml") && e.contains("abi_version") && e.contains("\"2\""), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let typo = format!("{GOOD}allow_unsigend: true\n");
        let e = parse_guard_manifest(typo.as_bytes(), "g.yaml").unwrap_err().to_string();
        assert!(e.contains("g.yaml") && e.contains("allow_unsigend"), "{e}");
        let missing = GOOD.replace("wasm_path: pii.wasm\n", "");
        let e = parse_guard_manifest(missing.as_bytes(), "g.yaml").unwrap_err().to_string();
        assert!(e.contains("g.yaml") && e.contains("wasm_path"), "{e}");
        let e = parse_artefact_manifest(br#"{"schema_version":"1.0"}"#, "manifest.json").unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("missing field"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let bad = GOOD.replace("wasm_sha256: \"9f", "wasm_sha256: \"9F");
        let e = parse_guard_manifest(bad.as_bytes(), "g.yaml").unwrap_err().to_string();
        assert!(e.contains("field wasm_sha256"), "{e}");
        let bad = format!("{GOOD}wit_world: \"chio:guard/guard@0.1.0\"\n");
        let e = parse_guard_manifest(bad.as_bytes(), "g.yaml").unwrap_err().to_string();
        assert!(e.contains("field wit_world") && e.contains("0.2.0"), "{e}");
        let bad = GOOD.replace("name: pii-scanner", "name: \"pii\\nscanner\"");
        let e = parse_guard_manifest(bad.as_bytes(), "g.yaml").unwrap_err().to_string();
        assert!(e.contains("field name"), "{e}");
    }
}
