//! JSON shapes of the guard convention (chio's core ABI).

use serde::{Deserialize, Serialize};

/// A tool call an agent wants to make. Tolerant of fields a newer host may add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardRequest {
    pub tool_name: String,
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub agent_id: String,
    /// The tool's arguments, any JSON.
    #[serde(default)]
    pub arguments: serde_json::Value,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_grant_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filesystem_roots: Vec<String>,
}

/// A guard's decision. Serialises as `{"decision":"allow"}` or
/// `{"decision":"deny","reason":"..."}`, the canary-fixture form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum GuardVerdict {
    Allow,
    Deny { reason: String },
}

impl GuardVerdict {
    pub fn deny(reason: impl Into<String>) -> Self {
        GuardVerdict::Deny { reason: reason.into() }
    }
    pub fn is_allow(&self) -> bool {
        matches!(self, GuardVerdict::Allow)
    }
}

/// The JSON a guest writes through `chio_deny_reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyReason {
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_match_the_canary_bytes() {
        assert_eq!(serde_json::to_string(&GuardVerdict::Allow).unwrap(), r#"{"decision":"allow"}"#);
        assert_eq!(serde_json::to_string(&GuardVerdict::deny("x")).unwrap(), r#"{"decision":"deny","reason":"x"}"#);
    }

    #[test]
    fn empty_filesystem_roots_are_omitted() {
        let r = GuardRequest { tool_name: "ls".into(), ..Default::default() };
        let j = serde_json::to_string(&r).unwrap();
        assert!(!j.contains("filesystem_roots") && j.contains(r#""scopes":[]"#), "{j}");
    }
}
