//! TLS with rustls (ring provider): client-facing (certificates and keys from PEM files) and to
//! the nodes (per-node `tls`), loaded at start and again on every reload.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::ConfigError;

/// Client-facing TLS of one listener.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel-binding data of the certificate (SCRAM-SHA-256-PLUS).
    pub end_point: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// TLS for `cert` (a PEM chain, leaf first) and `key` (a PEM private key). `origin` and `field`
/// name the configuration entry in errors.
pub fn acceptor(cert: &Path, key: &Path, origin: &str, field: &str) -> Result<ServerTls, ConfigError> {
    let invalid =
        |message: String| ConfigError::Invalid { file: origin.to_string(), field: field.to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: no certificate in the file", cert.display())));
    }
    let end_point = crate::scram::tls_server_end_point(&certs[0]);
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("certificate and key do not make a TLS identity: {e}")))?;
    Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(config)), end_point })
}

/// A TLS connector to a node: certificates checked against `ca_file` (`verify-full`), or not
/// checked at all (`prefer`/`require`: encryption without authentication, as libpq's modes).
pub fn connector(ca_file: Option<&Path>, origin: &str, field: &str) -> Result<Connector, ConfigError> {
    let invalid =
        |message: String| ConfigError::Invalid { file: origin.to_string(), field: field.to_string(), message };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let config = match ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| invalid(format!("{}: {e}", ca.display())))? {
                let c = c.map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
                roots.add(c).map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(invalid(format!("{}: no CA certificate in the file", ca.display())));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
        }
    };
    Ok(Connector(TlsConnector::from(Arc::new(config))))
}

/// A TLS connector to a node.
#[derive(Clone)]
pub struct Connector(pub TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Accepts any server certificate, still checking the handshake signatures (libpq's
/// `sslmode=require` semantics: encrypted, not authenticated).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
