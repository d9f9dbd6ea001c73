//! Argument parsing and glue of the `helios-plugin` command (and its `cargo helios-plugin` alias).
//! Every behaviour lives in `helios-plugin-artefact` (keys, signatures, artefacts, verification) or
//! `helios-plugin-host` (`call`); this crate only reads arguments, calls them and prints.
//!
//! Exit codes: 0 success, 1 unclassified error, 2 usage error, and one code per verification
//! failure class ([`helios_plugin_artefact::ErrorKind::exit_code`], listed by `helios-plugin
//! --help`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use helios_plugin_artefact::{
    self as artefact, Blocklist, ErrorKind, PackOptions, PackSigning, TrustRoot, UnpackLimits, VerifyOptions, keys,
    manifests, signing,
};
use helios_plugin_schema::Hook;
use helios_plugin_schema::limits::DEFAULT_MAX_MODULE_BYTES;
use helios_plugin_schema::manifest::{GUARD_MANIFEST_FILE, SIDECAR_SUFFIX};

/// The exit-code table, for `--help`.
pub fn exit_code_table() -> String {
    let mut s = String::from("Exit codes:\n  0   success\n  1   other error\n  2   usage error\n");
    for kind in ErrorKind::ALL {
        s.push_str(&format!("  {:<3} {:<27} {}\n", kind.exit_code(), kind.code(), kind.summary()));
    }
    s
}

/// The process exit code for an error: its class's code if it has one, else 1.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    err.chain().find_map(|e| e.downcast_ref::<artefact::Error>()).map(|e| e.kind().exit_code()).unwrap_or(1)
}

/// `keygen`: a new Ed25519 key pair.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Private key to write (PKCS#8 PEM, mode 0600). The public key goes next to it as
    /// `<stem>.pub.pem` (PEM SPKI) and `<stem>.pub` (base64 of the raw 32 bytes).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn keygen(args: KeygenArgs) -> Result<i32> {
    let key = keys::generate_signing_key()?;
    let vk = key.verifying_key();
    let pub_pem = args.out.with_extension("pub.pem");
    let pub_b64 = args.out.with_extension("pub");
    for p in [&args.out, &pub_pem, &pub_b64] {
        if p.exists() && !args.force {
            bail!("{} exists; pass --force to overwrite", p.display());
        }
    }
    write_private(&args.out, keys::signing_key_pem(&key).as_bytes())?;
    write_file(&pub_pem, keys::public_key_pem(&vk).as_bytes())?;
    write_file(&pub_b64, keys::public_key_base64(&vk).as_bytes())?;
    println!("private key  {}", args.out.display());
    println!("public key   {} (PEM SPKI), {} (base64)", pub_pem.display(), pub_b64.display());
    println!("public hex   {}", keys::public_key_hex(&vk));
    Ok(0)
}

/// `sign`: sign a module (writes its sidecar) or an artefact (in place).
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Private key: PKCS#8 PEM (`openssl genpkey -algorithm ed25519`, `helios-plugin keygen`) or an
    /// unencrypted signify secret key.
    #[arg(long, required_unless_present = "public_key")]
    pub key: Option<PathBuf>,
    /// The module (`.wasm`) or artefact (`.tar.gz`) to sign.
    #[arg(long)]
    pub input: PathBuf,
    /// Plugin name (modules only; default: the name the module declares — the SDK records its
    /// crate's package name — or a guard-manifest.yaml next to the module).
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version (modules only; default: as for --name).
    #[arg(long)]
    pub version: Option<String>,
    /// Where to write: the sidecar (default: `<input>.sig`), the signed artefact (default: in place),
    /// or the message with --message-only.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sign elsewhere (openssl, signify, an HSM): the public key of that signer.
    #[arg(long, conflicts_with = "key")]
    pub public_key: Option<PathBuf>,
    /// With --public-key: write the exact bytes to sign instead of a sidecar.
    #[arg(long, requires = "public_key", conflicts_with = "signature")]
    pub message_only: bool,
    /// With --public-key: a signature of those bytes (raw 64 bytes, hex, base64 or a signify `.sig`);
    /// it is checked, then written as the sidecar.
    #[arg(long, requires = "public_key")]
    pub signature: Option<PathBuf>,
}

fn is_gzip(path: &Path) -> Result<bool> {
    use std::io::Read as _;
    let mut magic = [0u8; 2];
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(f.read(&mut magic)? == 2 && magic == [0x1f, 0x8b])
}

pub fn sign(args: SignArgs) -> Result<i32> {
    let limits = UnpackLimits::default();
    if is_gzip(&args.input)? {
        if args.name.is_some() {
            bail!("--name/--version apply to modules; an artefact's name and version come from its manifest");
        }
        let Some(key_path) = &args.key else {
            bail!("signing an artefact needs --key (it signs the module and the manifest)")
        };
        let key = keys::read_signing_key(key_path)?;
        let signed = artefact::sign_artefact(&artefact::read_artefact(&args.input, &limits)?, &key)?;
        let out = args.out.clone().unwrap_or_else(|| args.input.clone());
        artefact::save_artefact(&signed, &out)?;
        let m = manifests::parse_artefact_manifest(&signed.manifest, "manifest.json")?;
        println!(
            "signed {} {} with {} -> {}",
            m.name,
            m.version,
            keys::public_key_hex(&key.verifying_key()),
            out.display()
        );
        return Ok(0);
    }
    let wasm = read_module(&args.input)?;
    let (name, version) = name_and_version(&wasm, &args.input, args.name.clone(), args.version.clone(), "sign")?;
    manifests::check_name(&name, "--name", "name")?;
    manifests::check_version(&version, "--version", "version")?;
    let sidecar_out =
        args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}{SIDECAR_SUFFIX}", args.input.display())));
    let sidecar = if let Some(key_path) = &args.key {
        signing::sign_module(&keys::read_signing_key(key_path)?, &wasm, &name, &version)
    } else {
        let pub_path = args.public_key.as_ref().expect("clap: --key or --public-key");
        let vk = keys::read_public_key(pub_path)?;
        if args.message_only {
            let message = helios_plugin_schema::manifest::signed_module_message(
                &signing::sha256_hex(&wasm),
                &name,
                &version,
                &keys::public_key_hex(&vk),
            );
            match &args.out {
                Some(p) => write_file(p, &message)?,
                None => std::io::stdout().write_all(&message)?,
            }
            return Ok(0);
        }
        let Some(sig_path) = &args.signature else { bail!("--public-key needs --signature <file> or --message-only") };
        let sig = std::fs::read(sig_path).with_context(|| format!("reading {}", sig_path.display()))?;
        signing::sidecar_from_signature(&wasm, &name, &version, &vk, &sig, &sig_path.display().to_string())?
    };
    write_file(&sidecar_out, &signing::sidecar_bytes(&sidecar))?;
    println!(
        "signed {name} {version} ({}) with {} -> {}",
        sidecar.module_hash,
        sidecar.signer_public_key,
        sidecar_out.display()
    );
    Ok(0)
}

/// The plugin's name and version for `sign` and `pack`: the flags, else what the module declares
/// in its `helios.plugin` section (the SDK writes its crate's name and version there), else a
/// guard-manifest.yaml next to the module. A flag overrides only its own value.
fn name_and_version(
    wasm: &[u8],
    path: &Path,
    name: Option<String>,
    version: Option<String>,
    command: &str,
) -> Result<(String, String)> {
    if let (Some(n), Some(v)) = (&name, &version) {
        return Ok((n.clone(), v.clone()));
    }
    let info = artefact::ModuleInfo::parse(wasm)
        .map_err(|e| artefact::Error::new(ErrorKind::ModuleInvalid, format!("module {}: {e}", path.display())))?;
    if let (Some(n), Some(v)) = (&info.declared_name, &info.declared_version) {
        return Ok((name.unwrap_or_else(|| n.clone()), version.unwrap_or_else(|| v.clone())));
    }
    let (n, v) = name_from_guard_manifest(path, command)?;
    Ok((name.unwrap_or(n), version.unwrap_or(v)))
}

/// Name and version from the guard-manifest.yaml next to `wasm`, if it describes that module.
fn name_from_guard_manifest(wasm: &Path, command: &str) -> Result<(String, String)> {
    let dir = wasm.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mpath = dir.join(GUARD_MANIFEST_FILE);
    if !mpath.is_file() {
        bail!(
            "{command} needs --name and --version: module {} declares no name and version (it was not built with the helios-plugin SDK, whose #[hook] and #[chio_guard] record them) and there is no {} next to it",
            wasm.display(),
            GUARD_MANIFEST_FILE
        );
    }
    let bytes = std::fs::read(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let m = manifests::parse_guard_manifest(&bytes, &mpath.display().to_string())?;
    let described = dir.join(&m.wasm_path);
    let same = std::fs::canonicalize(&described).ok() == std::fs::canonicalize(wasm).ok();
    if !same {
        bail!(
            "{command} needs --name and --version: module {2} declares no name and version, and {0} describes {1}, not {2}",
            mpath.display(),
            m.wasm_path,
            wasm.display()
        );
    }
    Ok((m.name, m.version))
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > DEFAULT_MAX_MODULE_BYTES {
        return Err(artefact::Error::new(
            ErrorKind::ModuleTooLarge,
            format!("module {} is {len} bytes (limit: {DEFAULT_MAX_MODULE_BYTES})", path.display()),
        )
        .into());
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `pack`: build a `.tar.gz` artefact.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The module.
    #[arg(long)]
    pub wasm: PathBuf,
    /// Plugin name (default: the name the module declares, as for `sign`).
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version (default: the version the module declares).
    #[arg(long)]
    pub version: Option<String>,
    /// Hooks the plugin serves, comma-separated (default: every hook the module exports). Each must
    /// be exported by the module. `evaluate` (or `guard`) declares a chio guard.
    #[arg(long, value_delimiter = ',', value_parser = parse_hook_entry)]
    pub hooks: Option<Vec<HookEntry>>,
    /// Artefact format: `helios` (module sidecar and manifest signature) or `heliosproxy`
    /// (HeliosProxy's: `plugin.sig` is base64 of a raw Ed25519 signature over the module; with --key).
    #[arg(long, value_enum, default_value_t = PackFormat::Helios)]
    pub format: PackFormat,
    /// The module's sidecar (default: `<wasm>.sig` if it exists). The manifest stays unsigned until
    /// `helios-plugin sign --key KEY --input <artefact>`.
    #[arg(long, conflicts_with = "key")]
    pub sig: Option<PathBuf>,
    /// Sign module and manifest with this private key while packing.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Package unsigned even if `<wasm>.sig` exists.
    #[arg(long, conflicts_with_all = ["sig", "key"])]
    pub unsigned: bool,
    /// Config entry `key=value` (repeatable).
    #[arg(long = "config", value_parser = parse_kv)]
    pub config: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long, default_value = "")]
    pub license: String,
    /// The artefact to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `pack --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackFormat {
    /// Our format: a JSON sidecar binding name and version, and `manifest.sig` with --key.
    Helios,
    /// HeliosProxy's: `plugin.sig` = base64 of a raw Ed25519 signature over the module bytes.
    Heliosproxy,
}

/// One `--hooks` value: a hook of the catalogue, or chio's guard export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEntry {
    Hook(Hook),
    /// `evaluate` (alias `guard`).
    Guard,
}

fn parse_hook_entry(s: &str) -> Result<HookEntry, String> {
    let s = s.trim();
    if s == helios_plugin_schema::abi::EVALUATE || s == "guard" {
        return Ok(HookEntry::Guard);
    }
    helios_plugin_schema::manifest::hook_names::lookup(s)
        .map(HookEntry::Hook)
        .map_err(|e| format!("{e}, or evaluate (alias guard) for a chio guard"))
}

/// `--hooks` values: hooks of the catalogue, and whether `evaluate` is among them.
fn split_hooks(values: &[HookEntry]) -> (Vec<Hook>, bool) {
    let mut hooks = Vec::new();
    let mut guard = false;
    for v in values {
        match v {
            HookEntry::Guard => guard = true,
            HookEntry::Hook(h) if !hooks.contains(h) => hooks.push(*h),
            HookEntry::Hook(_) => {}
        }
    }
    (hooks, guard)
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, found {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub fn pack(args: PackArgs) -> Result<i32> {
    let wasm = read_module(&args.wasm)?;
    let (name, version) = name_and_version(&wasm, &args.wasm, args.name.clone(), args.version.clone(), "pack")?;
    let (hooks, guard) = match &args.hooks {
        Some(values) => {
            let (h, g) = split_hooks(values);
            (Some(h), Some(g))
        }
        None => (None, None),
    };
    let default_sig = PathBuf::from(format!("{}{SIDECAR_SUFFIX}", args.wasm.display()));
    let signing = if let Some(k) = &args.key {
        let key = Box::new(keys::read_signing_key(k)?);
        match args.format {
            PackFormat::Helios => PackSigning::Key(key),
            PackFormat::Heliosproxy => PackSigning::RawKey(key),
        }
    } else if args.format == PackFormat::Heliosproxy && args.sig.is_none() {
        bail!("--format heliosproxy signs while packing: pass --key (or --sig with a base64 signature over the module)")
    } else if let Some(s) = &args.sig {
        PackSigning::Sidecar(std::fs::read(s).with_context(|| format!("reading {}", s.display()))?)
    } else if !args.unsigned && default_sig.is_file() {
        eprintln!("note: including sidecar {}", default_sig.display());
        PackSigning::Sidecar(std::fs::read(&default_sig)?)
    } else {
        PackSigning::Unsigned
    };
    let sidecar_only = matches!(signing, PackSigning::Sidecar(_));
    let unsigned = matches!(signing, PackSigning::Unsigned);
    let mut config = BTreeMap::new();
    for (k, v) in args.config {
        if config.insert(k.clone(), v).is_some() {
            bail!("--config {k} given twice");
        }
    }
    let opts = PackOptions {
        description: args.description,
        license: args.license,
        hooks,
        guard,
        config,
        signing,
        ..PackOptions::new(name, version)
    };
    let packed = artefact::pack(wasm, opts)?;
    artefact::save_artefact(&packed.artefact, &args.out)?;
    let m = &packed.manifest;
    let mut hooks: Vec<_> = m.hooks.iter().map(|h| h.export_name()).collect();
    if m.guard {
        hooks.push(helios_plugin_schema::abi::EVALUATE);
    }
    println!(
        "packed {} {} [{}] sha256 {} -> {}",
        m.name,
        m.version,
        hooks.join(", "),
        m.wasm_sha256,
        args.out.display()
    );
    if !packed.undeclared_exports.is_empty() {
        let extra: Vec<_> = packed.undeclared_exports.iter().map(|h| h.export_name()).collect();
        eprintln!(
            "warning: the module exports hooks that are not declared and will never be called: {}",
            extra.join(", ")
        );
    }
    if sidecar_only && (!m.config.is_empty() || args.hooks.is_some()) {
        eprintln!(
            "note: the manifest is not signed; verify accepts it only while it repeats what the module declares (hooks, no config). To sign it: helios-plugin sign --key KEY --input {}",
            args.out.display()
        );
    }
    if unsigned {
        eprintln!("note: unsigned artefact; sign it with: helios-plugin sign --key KEY --input {}", args.out.display());
    }
    Ok(0)
}

/// `inspect`: what an artefact holds (nothing is trusted or verified).
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The `.tar.gz` artefact.
    pub artefact: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<i32> {
    let report = match artefact::inspect_artefact(&args.artefact, &UnpackLimits::default()) {
        Ok(r) => r,
        Err(e) if args.json => return Ok(json_failure(&e)),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", json_success(&report)?);
    } else {
        print!("{report}");
    }
    Ok(0)
}

/// `{"ok": true, ...fields of value}` for `--json` output.
fn json_success(value: &impl serde::Serialize) -> Result<String> {
    let mut v = serde_json::to_value(value)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("ok".into(), true.into());
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

/// Prints `{"ok": false, "code": "E_...", "message": ..., "exit_code": N}` on stdout (and the usual
/// `error:` line on stderr) and returns the exit code, so a CI job can parse every outcome.
fn json_failure(e: &artefact::Error) -> i32 {
    let code = e.kind().exit_code();
    let v = serde_json::json!({"ok": false, "code": e.kind().code(), "message": e.to_string(), "exit_code": code});
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    eprintln!("error: {e}");
    code
}

/// `verify`: exits 0 only if the plugin passes every check against the trust root.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An artefact (`.tar.gz`), or a directory holding guard-manifest.yaml (or that file).
    pub path: PathBuf,
    /// Directory of trusted public keys (PEM, signify, hex or base64 `.pub`).
    #[arg(long)]
    pub trust_root: Option<PathBuf>,
    /// Digest blocklist `{"digests": ["sha256:..."]}`.
    #[arg(long)]
    pub blocklist: Option<PathBuf>,
    /// Accept an unsigned plugin (prints a warning). Development only.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Largest module accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: u64,
    /// Print the verified plugin as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> Result<i32> {
    let verified = || -> Result<artefact::VerifiedPlugin, artefact::Error> {
        let mut opts =
            VerifyOptions::default().allow_unsigned(args.allow_unsigned).max_module_bytes(args.max_module_bytes);
        if let Some(dir) = &args.trust_root {
            opts = opts.trust_root(TrustRoot::load(dir)?);
        }
        if let Some(b) = &args.blocklist {
            opts = opts.blocklist(Blocklist::load(b)?);
        }
        artefact::verify_path(&args.path, &opts)
    };
    let plugin = match verified() {
        Ok(p) => p,
        Err(e) if args.json => return Ok(json_failure(&e)),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", json_success(&plugin)?);
        return Ok(0);
    }
    let signer = match &plugin.signer {
        Some(s) => format!("signed by {} ({})", s.label, s.public_key),
        None => "UNSIGNED (allowed by --allow-unsigned)".into(),
    };
    println!("verified {} {} sha256 {} {signer}", plugin.name, plugin.version, plugin.sha256);
    Ok(0)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| artefact::Error::io(path, e).into())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| artefact::Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| artefact::Error::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| artefact::Error::io(path, e))?;
    }
    Ok(())
}

/// Arguments after the program name, without the `helios-plugin` that cargo inserts when it runs
/// `cargo-helios-plugin` as `cargo helios-plugin ...`.
pub fn args_without_cargo_prefix(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).is_some_and(|a| a == "helios-plugin") {
        args.remove(1);
    }
    args
}
