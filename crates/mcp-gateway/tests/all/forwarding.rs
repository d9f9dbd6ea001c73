//! Everything besides tool calls goes through the gateway untouched: resource templates (and
//! reading a templated resource no list showed), completions, `logging/setLevel` with the log
//! messages an upstream sends, `resources/subscribe` with `resources/updated`, and tools/prompts/
//! resources `list_changed`. The upstream is an rmcp server written here (streamable HTTP on
//! loopback); the agents are rmcp clients that record every notification they get.

#![allow(deprecated)] // logging and resources/subscribe are the pre-2026-07-28 surface agents still use

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService, ServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ClientHandler, ErrorData, RoleServer, ServerHandler};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::*;

/// What the upstream was asked besides tools and reads: `set_level warning`, `subscribe <uri>`...
type Asked = Arc<Mutex<Vec<String>>>;

#[derive(Clone)]
struct Docs {
    asked: Asked,
}

impl Docs {
    fn note(&self, what: String) {
        self.asked.lock().unwrap().push(what);
    }
}

impl ServerHandler for Docs {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(caps).with_server_info(Implementation::new("docs", "1.0.0"))
    }
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(serde_json::Map::from_iter([("type".to_string(), json!("object"))]));
        Ok(ListToolsResult::with_all_items(vec![Tool::new("poke", "sends notifications", schema)]))
    }
    async fn call_tool(
        &self,
        _: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let p = cx.peer;
        let _ =
            p.notify_logging_message(LoggingMessageNotificationParam::new(LoggingLevel::Debug, json!("noise"))).await;
        let mut warn = LoggingMessageNotificationParam::new(LoggingLevel::Warning, json!("disk almost full"));
        warn.logger = Some("fs".into());
        let _ = p.notify_logging_message(warn).await;
        let _ = p.notify_resource_updated(ResourceUpdatedNotificationParam::new("docs://readme")).await;
        let _ = p.notify_tool_list_changed().await;
        let _ = p.notify_prompt_list_changed().await;
        let _ = p.notify_resource_list_changed().await;
        Ok(CallToolResult::success(vec![ContentBlock::text("poked")]).into())
    }
    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new("docs://readme", "readme")]))
    }
    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![ResourceTemplate::new("docs://pages/{page}", "page")]))
    }
    async fn read_resource(
        &self,
        r: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = match r.uri.strip_prefix("docs://pages/") {
            Some(page) => format!("page {page}"),
            None if r.uri == "docs://readme" => "read me".into(),
            None => return Err(ErrorData::resource_not_found(format!("no {}", r.uri), None)),
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, r.uri)]).into())
    }
    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let arg = PromptArgument::new("name");
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new("greet", Some("greets"), Some(vec![arg]))]))
    }
    async fn complete(
        &self,
        r: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let all: &[&str] = match &r.r#ref {
            Reference::Prompt(p) if p.name == "greet" => &["alice", "alfred", "bob"],
            Reference::Resource(t) if t.uri == "docs://pages/{page}" => &["intro", "install", "faq"],
            _ => &[],
        };
        let values = all.iter().filter(|v| v.starts_with(&r.argument.value)).map(|v| v.to_string()).collect();
        Ok(CompleteResult::new(CompletionInfo::new(values).unwrap()))
    }
    async fn set_level(&self, r: SetLevelRequestParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.note(format!("set_level {:?}", r.level));
        Ok(())
    }
    async fn subscribe(&self, r: SubscribeRequestParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.note(format!("subscribe {}", r.uri));
        Ok(())
    }
    async fn unsubscribe(&self, r: UnsubscribeRequestParams, _: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.note(format!("unsubscribe {}", r.uri));
        Ok(())
    }
    /// `x-docs/shout`: answers with the word in capitals and, first, sends a notification of its
    /// own (`notifications/x-docs/shouted`). Any other method is not found.
    async fn on_custom_request(
        &self,
        r: CustomRequest,
        cx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        if r.method != "x-docs/shout" {
            return Err(ErrorData::new(ErrorCode::METHOD_NOT_FOUND, r.method, None));
        }
        let word = r.params.as_ref().and_then(|p| p["word"].as_str()).unwrap_or_default().to_uppercase();
        let n = CustomNotification::new("notifications/x-docs/shouted", Some(json!({"word": word})));
        let _ = cx.peer.send_notification(ServerNotification::CustomNotification(n)).await;
        Ok(CustomResult(json!({"shouted": word, "nested": {"list": [1, 2, 3], "null": null}})))
    }
    async fn on_custom_notification(&self, n: CustomNotification, _: NotificationContext<RoleServer>) {
        self.note(format!("{} {}", n.method, n.params.unwrap_or_default()));
    }
}

async fn serve_docs(asked: Asked) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    let service = rmcp::transport::StreamableHttpService::new(
        move || Ok(Docs { asked: asked.clone() }),
        LocalSessionManager::default().into(),
        config,
    );
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().nest_service("/mcp", service)).await });
    format!("http://{addr}/mcp")
}

/// An agent that records every notification it gets as one line.
#[derive(Clone)]
struct Recorder {
    name: String,
    tx: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new(self.name.clone(), "1.0"))
    }
    async fn on_logging_message(&self, p: LoggingMessageNotificationParam, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send(format!("log {:?} {} {}", p.level, p.logger.unwrap_or_default(), p.data));
    }
    async fn on_resource_updated(&self, p: ResourceUpdatedNotificationParam, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send(format!("updated {}", p.uri));
    }
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send("tools changed".into());
    }
    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send("prompts changed".into());
    }
    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send("resources changed".into());
    }
    async fn on_custom_notification(&self, n: CustomNotification, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send(format!("{} {}", n.method, n.params.unwrap_or_default()));
    }
}

async fn recorder(url: &str, name: &str) -> (RunningService<RoleClient, Recorder>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let transport = StreamableHttpClientTransport::from_uri(url);
    let agent = Recorder { name: name.into(), tx }.serve(transport).await.expect("MCP handshake over HTTP");
    (agent, rx)
}

/// Waits until every line of `want` arrived (in any order); returns everything that arrived.
async fn expect_all(rx: &mut mpsc::UnboundedReceiver<String>, want: &[&str]) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !want.iter().all(|w| got.iter().any(|g: &String| g == w)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => got.push(line),
            _ => panic!("missing some of {want:?}; got {got:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_completions_logging_subscriptions_and_list_changes_reach_through_the_gateway() {
    let asked: Asked = Arc::default();
    let upstream = serve_docs(asked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(&cfg, format!("upstreams:\n  - id: docs\n    url: {upstream}\ngateway:\n  reload_poll_ms: 0\n"))
        .unwrap();
    let gw = HttpGateway::start(&cfg);
    let (watcher, mut watcher_rx) = recorder(&gw.url, "watcher").await;
    let (bystander, mut bystander_rx) = recorder(&gw.url, "bystander").await;

    // Resource templates are listed, and a templated resource no list showed is read from the
    // upstream that has templates.
    let templates = watcher.list_all_resource_templates().await.unwrap();
    assert_eq!(templates.iter().map(|t| t.uri_template.as_str()).collect::<Vec<_>>(), ["docs://pages/{page}"]);
    let read = watcher.read_resource(ReadResourceRequestParams::new("docs://pages/intro")).await.unwrap();
    assert!(format!("{read:?}").contains("page intro"), "{read:?}");

    // Completions, for a prompt argument and for a template variable.
    let c = watcher
        .complete(CompleteRequestParams::new(Reference::for_prompt("greet"), ArgumentInfo::new("name", "al")))
        .await
        .unwrap();
    assert_eq!(c.completion.values, ["alice", "alfred"]);
    let c = watcher
        .complete(CompleteRequestParams::new(
            Reference::for_resource("docs://pages/{page}"),
            ArgumentInfo::new("page", "in"),
        ))
        .await
        .unwrap();
    assert_eq!(c.completion.values, ["intro", "install"]);

    // logging/setLevel and resources/subscribe reach the upstream; the bystander wants errors only.
    watcher.set_level(SetLevelRequestParams::new(LoggingLevel::Warning)).await.unwrap();
    bystander.set_level(SetLevelRequestParams::new(LoggingLevel::Error)).await.unwrap();
    watcher.subscribe(SubscribeRequestParams::new("docs://readme")).await.unwrap();

    // The upstream sends logs, an update and list changes: each session gets what it asked for.
    let (is_error, text) = call_with(&watcher, "poke").await;
    assert_eq!((is_error, text.as_str()), (false, "poked"));
    let got = expect_all(
        &mut watcher_rx,
        &[
            "log Warning docs/fs \"disk almost full\"",
            "updated docs://readme",
            "tools changed",
            "prompts changed",
            "resources changed",
        ],
    )
    .await;
    let seen_by_bystander =
        expect_all(&mut bystander_rx, &["tools changed", "prompts changed", "resources changed"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = Vec::new();
    while let Ok(l) = watcher_rx.try_recv() {
        late.push(l);
    }
    while let Ok(l) = bystander_rx.try_recv() {
        late.push(format!("bystander: {l}"));
    }
    let all: Vec<&String> = got.iter().chain(&seen_by_bystander).chain(&late).collect();
    assert!(!all.iter().any(|l| l.contains("noise")), "a debug message reached a session that asked for more: {all:?}");
    assert!(
        !seen_by_bystander.iter().chain(&late).any(|l| l.contains("updated") || l.contains("disk")),
        "the bystander neither subscribed nor asked for warnings: {all:?}"
    );

    watcher.unsubscribe(UnsubscribeRequestParams::new("docs://readme")).await.unwrap();
    let asked = asked.lock().unwrap().clone();
    assert!(asked.contains(&"subscribe docs://readme".to_string()), "{asked:?}");
    assert!(asked.contains(&"unsubscribe docs://readme".to_string()), "{asked:?}");
    assert!(
        asked.contains(&"set_level Warning".to_string()),
        "the upstream is set to the lowest level asked: {asked:?}"
    );
    let _ = watcher.cancel().await;
    let _ = bystander.cancel().await;
}

async fn call_with(agent: &RunningService<RoleClient, Recorder>, tool: &str) -> (bool, String) {
    let r =
        tokio::time::timeout(Duration::from_secs(30), agent.call_tool(CallToolRequestParams::new(tool.to_string())))
            .await
            .expect("tools/call answered within 30 s")
            .expect("tools/call");
    (r.is_error == Some(true), text(&r))
}

/// Methods no MCP revision defines reach the upstreams as they were sent: a request goes to the
/// first upstream that serves it (the Python SDK server serves `x-helios/echo`, the rmcp one
/// `x-docs/shout`), a notification to every upstream, and an upstream's own notification to the
/// agents; a method no upstream serves is "method not found".
#[tokio::test(flavor = "multi_thread")]
async fn requests_and_notifications_the_gateway_does_not_interpret_are_forwarded_untouched() {
    let asked: Asked = Arc::default();
    let docs = serve_docs(asked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstreams:\n{}  - id: docs\n    url: {docs}\ngateway:\n  reload_poll_ms: 0\n",
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let (agent, mut rx) = recorder(&gw.url, "agent").await;
    let custom = |method: &str, params: serde_json::Value| {
        ClientRequest::CustomRequest(CustomRequest::new(method.to_string(), Some(params)))
    };

    let params = json!({"word": "hi", "n": 3, "deep": {"a": [true, null, 1.5]}});
    match agent.send_request(custom("x-helios/echo", params.clone())).await.unwrap() {
        ServerResult::CustomResult(CustomResult(v)) => {
            assert_eq!((&v["server"], &v["echoed"]), (&json!("files"), &params), "{v}");
        }
        other => panic!("not the upstream's own result: {other:?}"),
    }
    let (tool, arguments) = seen(&seen_log).pop().unwrap();
    assert_eq!((tool.as_str(), arguments), ("x-helios/echo", params), "the Python SDK server got the params untouched");

    match agent.send_request(custom("x-docs/shout", json!({"word": "quiet"}))).await.unwrap() {
        ServerResult::CustomResult(CustomResult(v)) => {
            assert_eq!(v, json!({"shouted": "QUIET", "nested": {"list": [1, 2, 3], "null": null}}));
        }
        other => panic!("not the upstream's own result: {other:?}"),
    }
    expect_all(&mut rx, &["notifications/x-docs/shouted {\"word\":\"QUIET\"}"]).await;

    match agent.send_request(custom("x-nobody/serves-this", json!({}))).await {
        Err(rmcp::service::ServiceError::McpError(e)) => assert_eq!(e.code, ErrorCode::METHOD_NOT_FOUND, "{e:?}"),
        other => panic!("expected method not found: {other:?}"),
    }

    let note = CustomNotification::new("notifications/x-helios/note", Some(json!({"k": "v"})));
    agent.send_notification(ClientNotification::CustomNotification(note)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let python = seen(&seen_log).iter().any(|(t, a)| t == "notifications/x-helios/note" && a == &json!({"k": "v"}));
        let rust = asked.lock().unwrap().iter().any(|a| a == "notifications/x-helios/note {\"k\":\"v\"}");
        if python && rust {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "python {python}, rmcp {rust}: {:?}", asked.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
