//! The server side of SCRAM-SHA-256 (RFC 5802/7677), with `tls-server-end-point` channel binding
//! (SCRAM-SHA-256-PLUS, RFC 5929) when the client talks TLS, for authenticating clients against a
//! configured password or stored verifier.
//!
//! `postgres-protocol` implements the client side (used upstream) and makes verifiers from
//! passwords; the server side is the small state machine below over HMAC-SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The SASL mechanism name announced to clients.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The channel-binding variant, announced over TLS.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// `tls-server-end-point` binding data of a certificate: its SHA-256 hash (RFC 5929 uses the
/// certificate's signature hash, SHA-256 for MD5/SHA-1/SHA-256 signatures, which is what is
/// supported here).
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    Sha256::digest(cert_der).to_vec()
}

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    pub fn parse(s: &str) -> Result<Verifier, String> {
        let bad = |what: &str| format!("expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, {what}");
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(|| bad("found another prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("found no '$' before the keys"))?;
        let (iter, salt) = params.split_once(':').ok_or_else(|| bad("found no ':' after the iterations"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("found no ':' between the keys"))?;
        let iterations: u32 = iter.parse().map_err(|_| bad(&format!("found iterations \"{iter}\"")))?;
        let dec = |what: &str, v: &str| B64.decode(v).map_err(|_| bad(&format!("{what} is not base64")));
        let v = Verifier {
            iterations,
            salt: dec("salt", salt)?,
            stored_key: dec("StoredKey", stored)?,
            server_key: dec("ServerKey", server)?,
        };
        if v.stored_key.len() != 32 || v.server_key.len() != 32 || iterations == 0 {
            return Err(bad("found keys that are not 32 bytes or zero iterations"));
        }
        Ok(v)
    }

    /// A verifier for `password` with a fresh random salt.
    pub fn from_password(password: &str) -> Verifier {
        let s = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The library's output always has the shape we parse.
        Verifier::parse(&s).unwrap_or_else(|_| Verifier {
            iterations: 1,
            salt: vec![],
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn attr(msg: &str, name: char) -> Option<&str> {
    msg.split(',').find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// A SCRAM exchange after the server-first message.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    /// The channel-binding data the client must echo after the GS2 header.
    cbind_data: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Why a client failed SCRAM. Shown to the client only as "password authentication failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramError(pub String);

impl Exchange {
    /// Handles the client-first message; returns the exchange and the server-first message.
    /// `binding` is `Some(tls-server-end-point data)` when the client chose SCRAM-SHA-256-PLUS,
    /// `None` for SCRAM-SHA-256; `offered_plus` says whether PLUS was offered (then a client
    /// claiming `y` — "I could bind but the server cannot" — is a downgrade and refused).
    pub fn start(
        verifier: &Verifier,
        client_first: &[u8],
        binding: Option<&[u8]>,
        offered_plus: bool,
    ) -> Result<(Exchange, String), ScramError> {
        let msg = std::str::from_utf8(client_first).map_err(|_| ScramError("client-first is not UTF-8".into()))?;
        let (gs2_header, bare, cbind_data) = match binding {
            Some(data) => match msg.strip_prefix("p=tls-server-end-point,,") {
                Some(r) => ("p=tls-server-end-point,,", r, data.to_vec()),
                None => {
                    return Err(ScramError(format!("SCRAM-SHA-256-PLUS without tls-server-end-point in \"{msg}\"")));
                }
            },
            None => {
                if let Some(r) = msg.strip_prefix("n,,") {
                    ("n,,", r, Vec::new())
                } else if let Some(r) = msg.strip_prefix("y,,") {
                    if offered_plus {
                        return Err(ScramError(
                            "client claims the server cannot bind channels, but it offered PLUS".into(),
                        ));
                    }
                    ("y,,", r, Vec::new())
                } else {
                    return Err(ScramError(format!("unsupported GS2 header in \"{msg}\" for SCRAM-SHA-256")));
                }
            }
        };
        let client_nonce = attr(bare, 'r').ok_or_else(|| ScramError("client-first has no nonce".into()))?;
        let mut rnd = [0u8; 18];
        getrandom::fill(&mut rnd).map_err(|e| ScramError(format!("no randomness: {e}")))?;
        let nonce = format!("{client_nonce}{}", B64.encode(rnd));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&verifier.salt), verifier.iterations);
        let ex = Exchange {
            verifier: verifier.clone(),
            gs2_header: gs2_header.to_string(),
            cbind_data,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((ex, server_first))
    }

    /// Checks the client-final message; returns the server-final message on success.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError("client-final is not UTF-8".into()))?;
        let (without_proof, proof) =
            msg.rsplit_once(",p=").ok_or_else(|| ScramError("client-final has no proof".into()))?;
        let cb = attr(without_proof, 'c').ok_or_else(|| ScramError("client-final has no channel binding".into()))?;
        let mut expected = self.gs2_header.as_bytes().to_vec();
        expected.extend_from_slice(&self.cbind_data);
        if B64.decode(cb).ok() != Some(expected) {
            return Err(ScramError("channel binding does not match (GS2 header or TLS certificate)".into()));
        }
        if attr(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError("nonce does not match".into()));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError("proof is not base64".into()))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError("proof has the wrong length".into()));
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        let stored = Sha256::digest(&client_key);
        // Constant-time comparison of the derived StoredKey.
        let diff = stored.iter().zip(&self.verifier.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError("proof does not match".into()));
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password_client: &str, verifier: &Verifier) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password_client.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(verifier, client.message(), None, false)?;
        client.update(server_first.as_bytes()).map_err(|e| ScramError(e.to_string()))?;
        let server_final = ex.finish(client.message())?;
        client.finish(server_final.as_bytes()).map_err(|e| ScramError(format!("client rejects server: {e}")))
    }

    #[test]
    fn channel_binding_passes_with_the_same_certificate_and_fails_with_another() {
        let v = Verifier::from_password("pw");
        let cert = tls_server_end_point(b"the certificate");
        for (client_sees, ok) in [(cert.clone(), true), (tls_server_end_point(b"a forged one"), false)] {
            let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(client_sees));
            let (ex, server_first) = Exchange::start(&v, client.message(), Some(&cert), true).unwrap();
            client.update(server_first.as_bytes()).unwrap();
            assert_eq!(ex.finish(client.message()).is_ok(), ok);
        }
        // A client saying "y" (it could bind, thinks the server cannot) while PLUS was offered.
        let client = ScramSha256::new(b"pw", ChannelBinding::unrequested());
        assert!(Exchange::start(&v, client.message(), None, true).is_err());
    }

    #[test]
    fn the_right_password_passes_both_ways() {
        run("pw", &Verifier::from_password("pw")).unwrap();
    }

    #[test]
    fn a_wrong_password_is_refused() {
        let err = run("nope", &Verifier::from_password("pw")).unwrap_err();
        assert!(err.0.contains("proof"), "{err:?}");
    }

    #[test]
    fn verifiers_from_pg_authid_parse() {
        let v = postgres_protocol::password::scram_sha_256(b"x");
        assert!(Verifier::parse(&v).is_ok());
        assert!(Verifier::parse("md5abc").is_err());
    }
}
