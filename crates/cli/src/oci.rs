//! `helios-plugin push` and `pull`: artefacts to and from OCI registries, in oras's layout.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use helios_plugin_oci::{OciRef, Options};

/// Registry access shared by push and pull.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (no TLS), as oras's --plain-http.
    #[arg(long)]
    pub plain_http: bool,
    /// Registry user name (the password comes from HELIOS_REGISTRY_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,
}

impl RegistryArgs {
    fn options(&self) -> Result<Options> {
        let basic_auth = match &self.username {
            Some(u) => Some((
                u.clone(),
                std::env::var("HELIOS_REGISTRY_PASSWORD").context("--username needs HELIOS_REGISTRY_PASSWORD")?,
            )),
            None => None,
        };
        Ok(Options { plain_http: self.plain_http, basic_auth })
    }
}

/// `push`: upload an artefact.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The `.tar.gz` artefact.
    pub artefact: PathBuf,
    /// `oci://host[:port]/repository:tag`.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `pull`: download an artefact.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `oci://host[:port]/repository:tag` or `...@sha256:<digest>`.
    pub reference: String,
    /// Where to write the artefact.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn push(args: PushArgs) -> Result<i32> {
    let r = OciRef::parse(&args.reference)?;
    let bytes = std::fs::read(&args.artefact).with_context(|| format!("reading {}", args.artefact.display()))?;
    // Refuse to publish something that is not an artefact at all (signatures are the reader's job).
    helios_plugin_artefact::unpack(bytes.as_slice(), &args.artefact.display().to_string(), &Default::default())?;
    let name =
        args.artefact.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artefact.tar.gz".into());
    let pushed = helios_plugin_oci::push(&bytes, &name, &r, &args.registry.options()?)?;
    println!("pushed {} -> {}", args.artefact.display(), r);
    println!("digest {}", pushed.manifest_digest);
    println!("pin it as oci://{}/{}@{}", r.registry(), r.repository(), pushed.manifest_digest);
    Ok(0)
}

pub fn pull(args: PullArgs) -> Result<i32> {
    let r = OciRef::parse(&args.reference)?;
    let pulled = helios_plugin_oci::pull(&r, &args.registry.options()?)?;
    std::fs::write(&args.out, &pulled.bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!("pulled {} ({} bytes) -> {}", r, pulled.bytes.len(), args.out.display());
    println!("digest {}", pulled.manifest_digest);
    Ok(0)
}
