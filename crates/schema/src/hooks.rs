//! The hook catalogue: every hook a plugin can serve, its export name, its identity as a
//! (protocol, event, phase) triple, and the types that cross the boundary for it.
//!
//! The catalogue is HeliosProxy's hook list. Each hook also carries yorishiro's identity triple, so
//! that HTTP and tool-call hooks can join as new variants without changing how hooks are named,
//! declared or ordered.

use serde::{Serialize, de::DeserializeOwned};

use crate::wire::{HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult};

/// The protocol a hook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// PostgreSQL traffic through a proxy.
    Postgres,
    /// Agent tool calls (chio's guards).
    ToolCall,
    /// Host-defined extension points.
    Custom,
    /// HTTP/1.x and HTTP/2 request/response messages (yorishiro's `http`).
    Http,
    /// Connection lifecycle, accept and close (yorishiro's `connection`).
    Connection,
}

/// When, relative to the host's own processing, a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Before the host acts on the message (may block or rewrite it).
    PrePipeline,
    /// After the host acted (observes the outcome).
    PostPipeline,
    /// Lifecycle events that are not part of a message pipeline.
    None,
}

/// A hook's identity: (protocol, event, phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookId {
    pub protocol: Protocol,
    pub event: &'static str,
    pub phase: Phase,
}

macro_rules! catalogue {
    ($( $variant:ident => $export:literal, $proto:ident, $event:literal, $phase:ident; )*) => {
        /// A hook of the catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Hook { $( $variant, )* }

        impl Hook {
            /// Every hook, in catalogue order.
            pub const ALL: &'static [Hook] = &[ $( Hook::$variant, )* ];

            /// The export a module defines to serve this hook (`pre_query`, ...).
            pub const fn export_name(self) -> &'static str {
                match self { $( Hook::$variant => $export, )* }
            }

            /// The Rust variant name, as written in `#[hook(PreQuery)]`.
            pub const fn variant_name(self) -> &'static str {
                match self { $( Hook::$variant => stringify!($variant), )* }
            }

            /// (protocol, event, phase).
            pub const fn id(self) -> HookId {
                match self {
                    $( Hook::$variant => HookId { protocol: Protocol::$proto, event: $event, phase: Phase::$phase }, )*
                }
            }
        }
    };
}

catalogue! {
    PreQuery => "pre_query", Postgres, "query", PrePipeline;
    PostQuery => "post_query", Postgres, "query", PostPipeline;
    Route => "route", Postgres, "route", PrePipeline;
    Authenticate => "authenticate", Postgres, "authenticate", PrePipeline;
    Authorize => "authorize", Postgres, "authorize", PrePipeline;
    CacheGet => "cache_get", Postgres, "cache", PrePipeline;
    CacheSet => "cache_set", Postgres, "cache", PostPipeline;
    Rewrite => "rewrite", Postgres, "rewrite", PrePipeline;
    Metrics => "metrics", Postgres, "metrics", None;
    OnConnect => "on_connect", Postgres, "connect", None;
    OnDisconnect => "on_disconnect", Postgres, "disconnect", None;
    CustomHook => "custom_hook", Custom, "custom", None;
    HttpRequest => "http_on_request", Http, "on_request", PrePipeline;
    HttpRequestPost => "http_on_request_post", Http, "on_request", PostPipeline;
    HttpResponse => "http_on_response", Http, "on_response", PrePipeline;
    HttpResponsePost => "http_on_response_post", Http, "on_response", PostPipeline;
    ConnectionOpen => "connection_on_connect", Connection, "on_connect", None;
    ConnectionClose => "connection_on_disconnect", Connection, "on_disconnect", None;
}

impl Hook {
    /// The catalogue hook with this identity (yorishiro's protocol and event names: `http`,
    /// `on_request`), if there is one.
    pub fn from_identity(protocol: &str, event: &str, phase: Phase) -> Option<Hook> {
        let protocol = match protocol {
            "http" => Protocol::Http,
            "connection" => Protocol::Connection,
            _ => return None,
        };
        Hook::ALL.iter().copied().find(|h| {
            let id = h.id();
            id.protocol == protocol && id.event == event && id.phase == phase
        })
    }

    /// Position in [`Hook::ALL`]; stable for a given schema version.
    pub fn index(self) -> usize {
        Hook::ALL.iter().position(|&h| h == self).unwrap_or(0)
    }

    /// Finds a hook by its export name (`pre_query`).
    pub fn from_export_name(name: &str) -> Option<Hook> {
        Hook::ALL.iter().copied().find(|h| h.export_name() == name)
    }

    /// Finds a hook by its variant name (`PreQuery`).
    pub fn from_variant_name(name: &str) -> Option<Hook> {
        Hook::ALL.iter().copied().find(|h| h.variant_name() == name)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.export_name())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Hook::from_export_name(s).or_else(|| Hook::from_variant_name(s)).ok_or_else(|| {
            let known: Vec<_> = Hook::ALL.iter().map(|h| h.export_name()).collect();
            format!("unknown hook \"{s}\" (known: {})", known.join(", "))
        })
    }
}

/// The static signature of a hook: what the guest receives and returns as JSON.
///
/// The guest SDK's `#[hook(X)]` checks a plugin function against `hooks::X`'s types, and a host's
/// typed call uses the same types, so both sides agree by construction.
pub trait HookSpec {
    /// The hook this spec describes.
    const HOOK: Hook;
    /// What the host sends.
    type Input: Serialize + DeserializeOwned;
    /// What the guest answers.
    type Output: Serialize + DeserializeOwned;
}

macro_rules! spec {
    ($( $name:ident: $in:ty => $out:ty; )*) => {
        $(
            #[doc = concat!("Type-level marker of [`Hook::", stringify!($name), "`].")]
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl HookSpec for $name {
                const HOOK: Hook = Hook::$name;
                type Input = $in;
                type Output = $out;
            }
        )*
    };
}

/// Per-hook marker types implementing [`HookSpec`]. Hooks whose payload has no fixed shape yet
/// exchange free-form JSON.
pub mod spec {
    use super::*;
    use crate::http::{HttpHookInput, HttpHookOutput};
    use serde_json::Value;
    spec! {
        PreQuery: QueryContext => PreQueryResult;
        PostQuery: PostQueryEnvelope => ();
        Route: QueryContext => RouteResult;
        Authenticate: Value => Value;
        Authorize: Value => Value;
        CacheGet: Value => Value;
        CacheSet: Value => Value;
        Rewrite: QueryContext => PreQueryResult;
        Metrics: Value => Value;
        OnConnect: HookContext => ();
        OnDisconnect: HookContext => ();
        CustomHook: Value => Value;
        HttpRequest: HttpHookInput => HttpHookOutput;
        HttpRequestPost: HttpHookInput => HttpHookOutput;
        HttpResponse: HttpHookInput => HttpHookOutput;
        HttpResponsePost: HttpHookInput => HttpHookOutput;
        ConnectionOpen: HttpHookInput => HttpHookOutput;
        ConnectionClose: HttpHookInput => HttpHookOutput;
    }
}

/// Hooks travel as their export name (`"pre_query"`).
impl Serialize for Hook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.export_name())
    }
}

impl<'de> serde::Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &h in Hook::ALL {
            assert!(seen.insert(h.export_name()), "duplicate export {h}");
            assert_eq!(Hook::from_export_name(h.export_name()), Some(h));
            assert_eq!(h.variant_name().parse::<Hook>(), Ok(h));
        }
        assert_eq!(Hook::ALL.len(), 18);
    }

    #[test]
    fn unknown_hook_lists_the_known_ones() {
        let err = "pre_qurey".parse::<Hook>().unwrap_err();
        assert!(err.contains("pre_qurey") && err.contains("pre_query"), "{err}");
    }

    #[test]
    fn pre_and_post_query_share_an_event_and_differ_in_phase() {
        let (pre, post) = (Hook::PreQuery.id(), Hook::PostQuery.id());
        assert_eq!((pre.protocol, pre.event), (post.protocol, post.event));
        assert_ne!(pre.phase, post.phase);
    }
}
