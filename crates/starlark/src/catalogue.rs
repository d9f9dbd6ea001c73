//! Which (protocol, event) pairs exist in yorishiro's hook reference, which ones a host fires,
//! and which of them are lifecycle events (phase `none`).

pub use helios_plugin_schema::hooks::Phase;

/// yorishiro's hook reference: every (protocol, event) pair a script may name. A pair outside this
/// list is unknown; a pair inside it that the host does not list in its [`HostHooks`] is refused
/// as "not fired by this host".
pub const KNOWN: &[(&str, &str)] = &[
    ("http", "on_request"),
    ("http", "on_response"),
    ("ws", "on_upgrade"),
    ("ws", "on_message"),
    ("ws", "on_close"),
    ("grpc", "on_start"),
    ("grpc", "on_data"),
    ("grpc", "on_end"),
    ("grpc-web", "on_start"),
    ("grpc-web", "on_data"),
    ("grpc-web", "on_end"),
    ("sse", "on_event"),
    ("raw", "on_chunk"),
    ("tls", "on_handshake"),
    ("connection", "on_connect"),
    ("connection", "on_disconnect"),
    ("socks5", "on_connect"),
];

/// Whether a known pair is a lifecycle event (fires with phase `none`, takes no `phase=`).
pub fn is_lifecycle(protocol: &str, event: &str) -> bool {
    matches!(protocol, "connection" | "tls" | "socks5") || (protocol, event) == ("ws", "on_close")
}

/// The phase names as scripts write them.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::PrePipeline => "pre_pipeline",
        Phase::PostPipeline => "post_pipeline",
        Phase::None => "none",
    }
}

/// Parses a phase name as passed to `register_hook(..., phase=...)`.
pub fn parse_phase(s: &str) -> Option<Phase> {
    match s {
        "pre_pipeline" => Some(Phase::PrePipeline),
        "post_pipeline" => Some(Phase::PostPipeline),
        "none" => Some(Phase::None),
        _ => None,
    }
}

/// A hook identity as registered by a plugin: (protocol, event, phase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct HookPoint {
    pub protocol: String,
    pub event: String,
    #[serde(serialize_with = "ser_phase")]
    pub phase: Phase,
}

fn ser_phase<S: serde::Serializer>(p: &Phase, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(phase_name(*p))
}

impl HookPoint {
    /// A hook point from its parts.
    pub fn new(protocol: &str, event: &str, phase: Phase) -> HookPoint {
        HookPoint { protocol: protocol.into(), event: event.into(), phase }
    }
}

impl std::fmt::Display for HookPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.protocol, self.event, phase_name(self.phase))
    }
}

/// The (protocol, event) pairs a host fires. Registration against anything else fails at load.
#[derive(Debug, Clone)]
pub struct HostHooks {
    fired: Vec<(&'static str, &'static str)>,
}

impl HostHooks {
    /// A host firing exactly `fired` (each must be in [`KNOWN`]).
    pub fn new(fired: &[(&'static str, &'static str)]) -> HostHooks {
        HostHooks { fired: fired.to_vec() }
    }

    /// The HTTP proxy host: `http` on_request/on_response and `connection` on_connect/on_disconnect.
    pub fn http_proxy() -> HostHooks {
        HostHooks::new(&[
            ("http", "on_request"),
            ("http", "on_response"),
            ("connection", "on_connect"),
            ("connection", "on_disconnect"),
        ])
    }

    /// Whether the host fires this pair.
    pub fn fires(&self, protocol: &str, event: &str) -> bool {
        self.fired.iter().any(|&(p, e)| p == protocol && e == event)
    }

    /// The fired pairs as `protocol/event`, for error messages.
    pub fn describe(&self) -> String {
        self.fired.iter().map(|(p, e)| format!("{p}/{e}")).collect::<Vec<_>>().join(", ")
    }

    /// Checks a registration and resolves its phase: transaction events default to
    /// `pre_pipeline` and accept `post_pipeline`; lifecycle events are `none` and refuse `phase=`.
    pub fn resolve(&self, protocol: &str, event: &str, phase: Option<&str>) -> Result<HookPoint, String> {
        if !KNOWN.contains(&(protocol, event)) {
            return Err(format!("unknown hook {protocol}/{event} (this host fires: {})", self.describe()));
        }
        if !self.fires(protocol, event) {
            return Err(format!("hook {protocol}/{event} is never fired by this host (it fires: {})", self.describe()));
        }
        let lifecycle = is_lifecycle(protocol, event);
        let phase = match (lifecycle, phase) {
            (true, None) => Phase::None,
            (true, Some(p)) => {
                return Err(format!(
                    "{protocol}/{event} is a lifecycle event: it takes no phase= argument (got phase=\"{p}\")"
                ));
            }
            (false, None) => Phase::PrePipeline,
            (false, Some(p)) => match parse_phase(p) {
                Some(Phase::None) => {
                    return Err(format!(
                        "{protocol}/{event} is a transaction event: phase must be \"pre_pipeline\" or \"post_pipeline\", not \"none\""
                    ));
                }
                Some(ph) => ph,
                None => {
                    return Err(format!(
                        "unknown phase \"{p}\" for {protocol}/{event} (use \"pre_pipeline\" or \"post_pipeline\")"
                    ));
                }
            },
        };
        Ok(HookPoint::new(protocol, event, phase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rules() {
        let h = HostHooks::http_proxy();
        assert_eq!(h.resolve("http", "on_request", None).unwrap().phase, Phase::PrePipeline);
        assert_eq!(h.resolve("http", "on_response", Some("post_pipeline")).unwrap().phase, Phase::PostPipeline);
        assert_eq!(h.resolve("connection", "on_connect", None).unwrap().phase, Phase::None);
        assert!(h.resolve("connection", "on_connect", Some("pre_pipeline")).unwrap_err().contains("takes no phase="));
        assert!(h.resolve("http", "on_request", Some("none")).unwrap_err().contains("not \"none\""));
        assert!(h.resolve("http", "on_request", Some("later")).unwrap_err().contains("unknown phase \"later\""));
    }

    #[test]
    fn unknown_and_unfired_pairs_are_named() {
        let h = HostHooks::http_proxy();
        assert!(h.resolve("http", "on_reqest", None).unwrap_err().contains("unknown hook http/on_reqest"));
        assert!(h.resolve("ws", "on_message", None).unwrap_err().contains("ws/on_message is never fired"));
    }
}
