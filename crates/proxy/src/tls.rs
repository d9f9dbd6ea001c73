//! Client-facing TLS with rustls (ring provider): certificates and keys from PEM files, loaded at
//! start and again on every reload.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConfigError;

/// A TLS acceptor for `cert` (a PEM chain, leaf first) and `key` (a PEM private key). `origin` and
/// `field` name the configuration entry in errors.
pub fn acceptor(cert: &Path, key: &Path, origin: &str, field: &str) -> Result<TlsAcceptor, ConfigError> {
    let invalid =
        |message: String| ConfigError::Invalid { file: origin.to_string(), field: field.to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: no certificate in the file", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("certificate and key do not make a TLS identity: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
