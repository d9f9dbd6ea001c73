//! `subscriptions/listen` (protocol 2026-07-28) through the gateway: an rmcp agent on the new
//! protocol listens to a resource; the upstream (an rmcp server written here, on streamable HTTP in
//! a runtime of its own so the test can kill it) publishes changes; the gateway opens the upstream
//! listen, relays what it sends, and closes it with the agent's subscription — over HTTP (a
//! 2026-07-28 connection) and over stdio (the `initialize`d connection; a second gateway is the
//! stdio upstream). The `mcp` Python SDK's server is an upstream too (`listen_server.py`).

use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{RequestContext, RoleClient, RunningService, ServiceError, SubscriptionContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ClientLifecycleMode, ClientServiceExt, ErrorData, RoleServer, ServerHandler};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::support::*;

/// What the test makes the upstream publish.
#[derive(Debug, Clone)]
enum Event {
    Updated(String),
    ListChanged,
}

/// An upstream with two resources that supports `subscriptions/listen` (resource updates and
/// resource list changes; no tool list changes). It reports each listen it opens (with the
/// filter it accepted) and closes on `log`.
#[derive(Clone)]
struct Feed {
    bus: broadcast::Sender<Event>,
    log: mpsc::UnboundedSender<String>,
}

impl ServerHandler for Feed {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .build();
        ServerConfig::new(caps).with_server_info(Implementation::new("feed", "1.0.0"))
    }
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![]))
    }
    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("feed://news", "news"),
            Resource::new("feed://weather", "weather"),
        ]))
    }
    async fn read_resource(
        &self,
        r: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match r.uri.as_str() {
            "feed://news" | "feed://weather" => {
                Ok(ReadResourceResult::new(vec![ResourceContents::text("latest", r.uri)]).into())
            }
            _ => Err(ErrorData::resource_not_found(format!("no {}", r.uri), None)),
        }
    }
    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }
    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        // Subscribed to the bus before reporting the listen open: nothing published after the
        // report is missed.
        let mut events = self.bus.subscribe();
        let _ = self.log.send(format!("listen open {}", serde_json::to_string(cx.accepted()).unwrap()));
        loop {
            tokio::select! {
                _ = cx.cancelled() => {
                    drop(events);
                    let _ = self.log.send("listen closed".into());
                    return Ok(());
                }
                event = events.recv() => {
                    let sent = match event {
                        Ok(Event::Updated(uri)) => cx.sink().notify_resource_updated(uri).await,
                        Ok(Event::ListChanged) => cx.sink().notify_resource_list_changed().await,
                        Err(_) => return Ok(()),
                    };
                    // The sink refuses what this listen did not accept; that is the upstream's business.
                    let _ = sent;
                }
            }
        }
    }
}

/// The feed on streamable HTTP, served by a runtime of its own: dropping it kills the server
/// (every connection closes at once, as when the process dies).
struct FeedServer {
    url: String,
    bus: broadcast::Sender<Event>,
    log: mpsc::UnboundedReceiver<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FeedServer {
    fn start() -> FeedServer {
        let (bus, _) = broadcast::channel(16);
        let (log_tx, log) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let feed = Feed { bus: bus.clone(), log: log_tx };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
            let service = rmcp::transport::StreamableHttpService::new(
                move || Ok(feed.clone()),
                LocalSessionManager::default().into(),
                config,
            );
            axum::serve(listener, axum::Router::new().nest_service("/mcp", service)).await
        });
        FeedServer { url: format!("http://{addr}/mcp"), bus, log, runtime: Some(runtime) }
    }

    /// The next line the upstream logged (within 20 s).
    async fn logged(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.log.recv())
            .await
            .expect("the upstream logged within 20 s")
            .expect("the upstream's log is open")
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn gateway_for(dir: &std::path::Path, upstream: &str) -> HttpGateway {
    let cfg = dir.join("chio.yaml");
    std::fs::write(&cfg, format!("upstreams:\n  - id: feed\n    url: {upstream}\ngateway:\n  reload_poll_ms: 0\n"))
        .unwrap();
    HttpGateway::start(&cfg)
}

/// An agent on protocol 2026-07-28 (`server/discover`, no `initialize`).
async fn modern_agent(url: &str) -> RunningService<RoleClient, ClientConfig> {
    let info = ClientConfig::new(ClientCapabilities::default(), Implementation::new("listener", "1.0"));
    let lifecycle = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    tokio::time::timeout(
        Duration::from_secs(30),
        info.serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle),
    )
    .await
    .expect("server/discover answered within 30 s")
    .expect("a 2026-07-28 session with the gateway")
}

async fn next(
    s: &mut rmcp::service::Subscription,
    gw: &HttpGateway,
) -> Result<Option<ServerNotification>, ServiceError> {
    match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
        Ok(moved) => moved,
        Err(_) => panic!("the subscription did not move within 20 s\n{}", gw.log()),
    }
}

/// A notification on the agent's subscription as one line.
fn describe(n: Result<Option<ServerNotification>, ServiceError>) -> String {
    match n {
        Ok(Some(ServerNotification::ResourceUpdatedNotification(n))) => format!("updated {}", n.params.uri),
        Ok(Some(ServerNotification::ResourceListChangedNotification(_))) => "list changed".into(),
        other => panic!("not a resource update or list change: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_listens_to_a_resource_through_the_gateway_until_it_cancels() {
    let mut feed = FeedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_for(dir.path(), &feed.url);
    let agent = modern_agent(&gw.url).await;

    // What no upstream offers is left out of the acknowledgment: a resource nobody serves, and
    // tool list changes (the feed does not advertise them).
    let asked = SubscriptionFilter::builder()
        .resource_subscription("feed://news")
        .resource_subscription("nobody://nothing")
        .resources_list_changed()
        .tools_list_changed()
        .build();
    let mut sub = agent.listen(asked).await.unwrap_or_else(|e| panic!("listen: {e}\n{}", gw.log()));
    let offered = SubscriptionFilter::builder().resource_subscription("feed://news").resources_list_changed().build();
    assert_eq!(sub.acknowledged(), &offered);
    // The upstream was asked for exactly that (its acknowledgment comes before the agent's).
    let opened = feed.logged().await;
    let filter: serde_json::Value = serde_json::from_str(opened.strip_prefix("listen open ").unwrap()).unwrap();
    assert_eq!(filter, json!({"resourcesListChanged": true, "resourceSubscriptions": ["feed://news"]}));

    // An update of another resource, one of the subscribed one, then a list change as a marker:
    // the agent gets the update once, with its URI, and nothing between it and the marker.
    feed.bus.send(Event::Updated("feed://weather".into())).unwrap();
    feed.bus.send(Event::Updated("feed://news".into())).unwrap();
    feed.bus.send(Event::ListChanged).unwrap();
    assert_eq!(describe(next(&mut sub, &gw).await), "updated feed://news");
    assert_eq!(describe(next(&mut sub, &gw).await), "list changed");

    // The agent cancels: the upstream's listen closes, and a further update has no listener.
    sub.cancel().await.unwrap();
    assert_eq!(feed.logged().await, "listen closed", "{}", gw.log());
    assert_eq!(feed.bus.receiver_count(), 0, "an upstream listen outlived the agent's subscription");
    assert!(feed.bus.send(Event::Updated("feed://news".into())).is_err(), "a further update reached a listener");
    assert!(feed.log.try_recv().is_err(), "the upstream saw one listen open and one close");

    // A second subscription opens a new upstream listen of its own, which the agent's disconnect
    // closes.
    let mut sub =
        agent.listen(SubscriptionFilter::builder().resource_subscription("feed://weather").build()).await.unwrap();
    assert!(feed.logged().await.starts_with("listen open"));
    feed.bus.send(Event::Updated("feed://weather".into())).unwrap();
    assert_eq!(describe(next(&mut sub, &gw).await), "updated feed://weather");
    // The agent goes away without cancelling its subscription.
    let _ = agent.cancel().await;
    assert_eq!(feed.logged().await, "listen closed", "{}", gw.log());
    assert_eq!(feed.bus.receiver_count(), 0);
    drop(sub);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_dies_ends_the_agents_subscription_with_the_cause() {
    let mut feed = FeedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_for(dir.path(), &feed.url);
    let agent = modern_agent(&gw.url).await;
    let mut sub =
        agent.listen(SubscriptionFilter::builder().resource_subscription("feed://news").build()).await.unwrap();
    assert!(feed.logged().await.starts_with("listen open"));

    feed.kill();
    match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
        Ok(Err(ServiceError::McpError(e))) => {
            assert!(
                e.message.contains("upstream \"feed\" closed the connection during subscriptions/listen"),
                "the error names the upstream and the cause: {e:?}"
            );
        }
        Ok(other) => panic!("expected the subscription to end with an error: {other:?}\n{}", gw.log()),
        Err(_) => panic!("the subscription hung after the upstream died\n{}", gw.log()),
    }
    let _ = agent.cancel().await;
}

/// A stdio upstream is listened to on its one (`initialize`d) connection. The stdio upstream is
/// a second gateway (an rmcp server) in front of the feed: agent → gateway (HTTP) → gateway
/// (stdio child) → feed (HTTP); the cancel travels the same way back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_upstream_is_listened_to_on_its_one_connection() {
    let mut feed = FeedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner.yaml");
    std::fs::write(&inner, format!("upstreams:\n  - id: feed\n    url: {}\ngateway:\n  reload_poll_ms: 0\n", feed.url))
        .unwrap();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstreams:\n  - id: inner\n    command: {GATEWAY:?}\n    args: [--config, {:?}]\ngateway:\n  reload_poll_ms: 0\n",
            inner.display().to_string()
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let agent = modern_agent(&gw.url).await;
    let asked = SubscriptionFilter::builder().resource_subscription("feed://news").build();
    let mut sub = agent.listen(asked.clone()).await.unwrap_or_else(|e| panic!("listen: {e}\n{}", gw.log()));
    assert_eq!(sub.acknowledged(), &asked);
    assert!(feed.logged().await.starts_with("listen open"));

    feed.bus.send(Event::Updated("feed://news".into())).unwrap();
    assert_eq!(describe(next(&mut sub, &gw).await), "updated feed://news");

    sub.cancel().await.unwrap();
    assert_eq!(feed.logged().await, "listen closed", "{}", gw.log());
    assert_eq!(feed.bus.receiver_count(), 0);
    let _ = agent.cancel().await;
}

/// The upstream is the `mcp` Python SDK's server on streamable HTTP: the gateway listens to it on
/// a 2026-07-28 connection, and an update it announces (from a tool call that also goes through
/// the gateway) reaches the agent as soon as the agent's listen is acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_sdk_upstreams_updates_reach_the_agent() {
    let port = free_port();
    let _python = KillOnDrop(
        std::process::Command::new("python3")
            .arg(fixtures().join("listen_server.py"))
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the listen fixture"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the Python upstream did not listen on {port} within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_for(dir.path(), &format!("http://127.0.0.1:{port}/mcp"));
    let agent = modern_agent(&gw.url).await;
    let asked = SubscriptionFilter::builder().resource_subscription("feed://news").build();
    let mut sub = agent.listen(asked.clone()).await.unwrap_or_else(|e| panic!("listen: {e}\n{}", gw.log()));
    assert_eq!(sub.acknowledged(), &asked);

    let mut publish = CallToolRequestParams::new("publish");
    publish.arguments = json!({"uri": "feed://news"}).as_object().cloned();
    let published = agent.call_tool(publish).await.unwrap_or_else(|e| panic!("tools/call publish: {e}\n{}", gw.log()));
    assert_eq!(text(&published), "published feed://news");
    assert_eq!(describe(next(&mut sub, &gw).await), "updated feed://news");

    sub.cancel().await.unwrap();
    let _ = agent.cancel().await;
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
