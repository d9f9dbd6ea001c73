//! The startup phase of a client connection: SSLRequest/GSSENCRequest (declined), CancelRequest
//! (forwarded), the StartupMessage, and client authentication (trust or SCRAM-SHA-256).

use bytes::BytesMut;
use tracing::{debug, info};

use crate::codec::{self, Conn, Reader, Severity};
use crate::config::ClientAuth;
use crate::error::ProtocolError;
use crate::scram;
use crate::server::Shared;
use crate::sqlstate;

/// A client that sent its StartupMessage and authenticated.
#[derive(Debug)]
pub struct Login {
    pub user: String,
    pub database: String,
    /// Every startup parameter, in the order sent.
    pub params: Vec<(String, String)>,
}

/// Writes an ErrorResponse and flushes; errors writing are ignored (the client may be gone).
pub async fn send_error(client: &mut Conn, severity: Severity, code: &str, message: &str) {
    let mut b = BytesMut::new();
    codec::error_response(&mut b, severity, code, message, None);
    let _ = client.write_all(&b).await;
}

/// Runs the startup phase. `Ok(None)` when the connection ended there normally (a cancel request,
/// a refused login: the client was told why). With `refuse` set, a StartupMessage is answered with
/// that FATAL error (code, message) instead: after SSLRequest, so every client can show it.
pub async fn login(
    shared: &Shared,
    client: &mut Conn,
    auth: ClientAuth,
    tls: Option<&crate::tls::ServerTls>,
    refuse: Option<(&str, &str)>,
) -> Result<Option<Login>, ProtocolError> {
    let params = loop {
        let body = match client.read_startup().await {
            Ok(b) => b,
            Err(e @ (ProtocolError::TooLarge { .. } | ProtocolError::BadLength { .. })) => {
                send_error(
                    client,
                    Severity::Fatal,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid startup packet: {e}"),
                )
                .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut r = Reader::new(&body, "startup");
        let code = r.i32(client.peer())?;
        match code {
            codec::SSL_REQUEST_CODE if tls.is_some() && !client.is_tls() => {
                client.write_all(b"S").await?;
                if let Some(t) = tls {
                    client.accept_tls(&t.acceptor).await?;
                }
            }
            codec::SSL_REQUEST_CODE | codec::GSSENC_REQUEST_CODE => client.write_all(b"N").await?,
            codec::CANCEL_REQUEST_CODE => {
                let pid = r.i32(client.peer())?;
                let secret = r.i32(client.peer())?;
                shared.forward_cancel(pid, secret).await;
                return Ok(None);
            }
            codec::PROTOCOL_3_0 => {
                let mut params = Vec::new();
                loop {
                    let k = r.cstr(client.peer())?;
                    if k.is_empty() {
                        break;
                    }
                    let v = r.cstr(client.peer())?;
                    params.push((k.to_string(), v.to_string()));
                }
                break params;
            }
            other => {
                let msg = format!(
                    "unsupported frontend protocol {}.{}: helios-proxy speaks 3.0",
                    other >> 16,
                    other & 0xffff
                );
                send_error(client, Severity::Fatal, sqlstate::FEATURE_NOT_SUPPORTED, &msg).await;
                return Ok(None);
            }
        }
    };
    if let Some((code, message)) = refuse {
        send_error(client, Severity::Fatal, code, message).await;
        return Ok(None);
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user) = get("user") else {
        send_error(
            client,
            Severity::Fatal,
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return Ok(None);
    };
    let database = get("database").unwrap_or_else(|| user.clone());
    let binding = if client.is_tls() { tls.map(|t| t.end_point.as_slice()) } else { None };
    if auth == ClientAuth::ScramSha256 && !authenticate_scram(shared, client, &user, binding).await? {
        info!(%user, "client authentication failed");
        send_error(
            client,
            Severity::Fatal,
            sqlstate::INVALID_PASSWORD,
            &format!("password authentication failed for user \"{user}\""),
        )
        .await;
        return Ok(None);
    }
    Ok(Some(Login { user, database, params }))
}

/// SCRAM-SHA-256 with the client, SCRAM-SHA-256-PLUS offered too over TLS (`binding` is the
/// certificate's `tls-server-end-point` data); false if it failed (the caller reports it).
async fn authenticate_scram(
    shared: &Shared,
    client: &mut Conn,
    user: &str,
    binding: Option<&[u8]>,
) -> Result<bool, ProtocolError> {
    let Some(verifier) = shared.verifiers.get(user) else {
        return Ok(false);
    };
    let mut out = BytesMut::new();
    match binding {
        Some(_) => codec::auth_sasl(&mut out, &[scram::MECHANISM_PLUS, scram::MECHANISM]),
        None => codec::auth_sasl(&mut out, &[scram::MECHANISM]),
    }
    client.write_all(&out).await?;
    let f = client.read_frame().await?;
    if f.tag != b'p' {
        return Ok(false);
    }
    let mut r = Reader::new(f.body(), "SASLInitialResponse");
    let mech = r.cstr(client.peer())?;
    let len = r.i32(client.peer())?;
    let chosen = match (mech, binding) {
        (scram::MECHANISM, _) => None,
        (scram::MECHANISM_PLUS, Some(b)) => Some(b),
        _ => return Ok(false),
    };
    if len < 0 {
        return Ok(false);
    }
    let (ex, server_first) = match scram::Exchange::start(verifier, r.rest(), chosen, binding.is_some()) {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e.0, "SCRAM client-first refused");
            return Ok(false);
        }
    };
    out.clear();
    codec::auth_sasl_continue(&mut out, server_first.as_bytes());
    client.write_all(&out).await?;
    let f = client.read_frame().await?;
    if f.tag != b'p' {
        return Ok(false);
    }
    match ex.finish(f.body()) {
        Ok(server_final) => {
            out.clear();
            codec::auth_sasl_final(&mut out, server_final.as_bytes());
            client.write_all(&out).await?;
            Ok(true)
        }
        Err(e) => {
            debug!(error = %e.0, "SCRAM proof refused");
            Ok(false)
        }
    }
}
