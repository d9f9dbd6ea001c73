//! Guard evaluation off the async workers: a bounded number of evaluations run at once, each on
//! tokio's blocking pool; a call that cannot get a slot within the queue timeout is denied
//! (fail-closed) with a reason that says so. Every decision is logged (`tracing`, target
//! `helios_mcp_gateway::decision`), appended to the decision log file if one is configured, and
//! handed to the observers (the seam for metrics).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helios_plugin_schema::{GuardRequest, GuardVerdict};
use tokio::sync::Semaphore;

use crate::guards::{ChainVerdict, Decision, DecisionObserver, Guards, Outcome};

/// Appends decisions as JSON lines to a file.
#[derive(Debug)]
pub struct JsonLinesLog {
    file: Mutex<std::fs::File>,
}

impl JsonLinesLog {
    pub fn open(path: &Path) -> std::io::Result<JsonLinesLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLinesLog { file: Mutex::new(file) })
    }
}

impl DecisionObserver for JsonLinesLog {
    fn decided(&self, d: &Decision) {
        let Ok(mut line) = serde_json::to_vec(d) else { return };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(error = %e, "cannot append to the decision log");
        }
    }
}

/// Runs the live guard set for tool calls.
#[derive(Debug, Clone)]
pub struct Decider {
    guards: Guards,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    observers: Arc<Vec<Arc<dyn DecisionObserver>>>,
}

impl Decider {
    pub fn new(
        guards: Guards,
        threads: usize,
        queue_timeout: Duration,
        observers: Vec<Arc<dyn DecisionObserver>>,
    ) -> Self {
        Decider {
            guards,
            slots: Arc::new(Semaphore::new(threads.max(1))),
            queue_timeout,
            observers: Arc::new(observers),
        }
    }

    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// The chain's verdict on `request`. Never fails: no slot in time, or a guard thread that
    /// died, is a deny naming the cause.
    pub async fn decide(&self, request: GuardRequest) -> GuardVerdict {
        let set = self.guards.current();
        if set.guards().is_empty() {
            return GuardVerdict::Allow;
        }
        let permit = match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                let reason = format!(
                    "gateway overloaded: no guard slot free within {} ms (denied, fail-closed)",
                    self.queue_timeout.as_millis()
                );
                tracing::warn!(tool = %request.tool_name, "{reason}");
                return GuardVerdict::Deny { reason };
            }
        };
        let joined = tokio::task::spawn_blocking(move || {
            let v = set.evaluate(&request);
            drop(permit);
            v
        })
        .await;
        match joined {
            Ok(ChainVerdict { verdict, decisions }) => {
                for d in &decisions {
                    self.record(d);
                }
                verdict
            }
            Err(e) => {
                GuardVerdict::Deny { reason: format!("guard evaluation did not finish: {e} (denied, fail-closed)") }
            }
        }
    }

    fn record(&self, d: &Decision) {
        match d.verdict {
            Outcome::Allow => tracing::info!(
                target: "helios_mcp_gateway::decision",
                guard = %d.guard, digest = %d.digest, verdict = "allow", duration_us = d.duration_us,
                tool = %d.tool, server = %d.server, agent = %d.agent, "guard decision"
            ),
            _ => tracing::info!(
                target: "helios_mcp_gateway::decision",
                guard = %d.guard, digest = %d.digest, verdict = d.verdict.as_str(), reason = d.reason.as_deref().unwrap_or(""),
                duration_us = d.duration_us, tool = %d.tool, server = %d.server, agent = %d.agent, "guard decision"
            ),
        }
        for o in self.observers.iter() {
            o.decided(d);
        }
    }
}
