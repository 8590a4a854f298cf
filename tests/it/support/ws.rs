//! A small GraphQL-over-WebSocket client (graphql-transport-ws, or the
//! legacy graphql-ws) over tokio-tungstenite, for the live tests.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// `node tests/ws/<script>`: a script driving npm `graphql-ws`, the
/// protocol's reference client (installed in tests/ws by `npm ci`, which
/// tests/run.sh runs).
pub fn reference_client(script: &str) -> std::process::Command {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(root)
            .join("tests/ws/node_modules/graphql-ws")
            .exists(),
        "run `npm ci` in tests/ws first (tests/run.sh does)"
    );
    let mut node = std::process::Command::new("node");
    node.arg(format!("{root}/tests/ws/{script}"));
    node
}

/// Runs a [`reference_client`] script to its end on a blocking thread.
pub fn run_script(
    mut node: std::process::Command,
) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    tokio::task::spawn_blocking(move || node.output())
}

/// What a script of [`run_script`] printed, once it exited 0; it fails
/// the test otherwise. The scripts give up by themselves after 30 s; this
/// waits 40.
pub async fn script_stdout(
    run: tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
) -> String {
    let output = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the script ends within 40 s")
        .expect("joined")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    stdout
}

/// What the server sent.
#[derive(Debug)]
pub enum Received {
    /// A protocol message (ping, next, error, complete, connection_ack...).
    Json(Value),
    /// The server closed the socket with this code and reason.
    Closed(u16, String),
    /// The socket ended without a close frame.
    Gone,
}

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects to `url` offering `subprotocol`.
    pub async fn connect(url: &str, subprotocol: &str) -> Self {
        match Self::try_connect(url, subprotocol).await {
            Ok(client) => client,
            Err(refused) => panic!("WebSocket upgrade refused: {refused:?}"),
        }
    }

    /// [`Self::connect`], or the HTTP answer that refused the upgrade.
    pub async fn try_connect(
        url: &str,
        subprotocol: &str,
    ) -> Result<Self, hyper::Response<Option<Vec<u8>>>> {
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            subprotocol.parse().expect("header value"),
        );
        let (ws, response) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => return Err(*refused),
            Err(e) => panic!("WebSocket upgrade: {e}"),
        };
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(subprotocol)
        );
        Ok(Self { ws })
    }

    /// Sends `connection_init` with `authorization`: the `connection_ack`
    /// message, or what came instead.
    pub async fn init(&mut self, authorization: &str) -> Received {
        self.send(json!({"type": "connection_init", "payload": {"Authorization": authorization}}))
            .await;
        self.next_message(Duration::from_secs(5)).await
    }

    /// Connects with graphql-transport-ws and completes `connection_init`.
    pub async fn ready(url: &str) -> Self {
        let mut client = Self::connect(url, "graphql-transport-ws").await;
        match client.init(super::ADMIN).await {
            Received::Json(m) if m["type"] == "connection_ack" => client,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    /// Sends `text` as it is, a message or not.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// Starts the closing handshake with a normal close (1000, "bye").
    pub async fn close(&mut self) {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        self.ws
            .send(Message::Close(Some(frame)))
            .await
            .expect("send close");
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id,
            "type": "subscribe",
            "payload": {"query": query, "variables": variables}
        }))
        .await;
    }

    /// The next message, pings included; panics after `within`.
    pub async fn next_message(&mut self, within: Duration) -> Received {
        let next = tokio::time::timeout(within, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Received::Json(serde_json::from_str(&text).expect("JSON message"));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map_or(Received::Closed(1005, String::new()), |f| {
                            Received::Closed(u16::from(f.code), f.reason.to_string())
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Received::Gone,
                }
            }
        })
        .await;
        next.unwrap_or_else(|_| panic!("nothing received within {within:?}"))
    }

    /// The next `next` payload, answering pings on the way; panics after
    /// `within`.
    pub async fn next_payload(&mut self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await {
                Received::Json(m) if m["type"] == "next" => return m["payload"].clone(),
                Received::Json(m) if m["type"] == "ping" => {
                    self.send(json!({"type": "pong"})).await;
                }
                Received::Json(m) if m["type"] == "pong" => {}
                other => panic!("expected a next message, got {other:?}"),
            }
        }
    }

    /// The first message about subscription `id` (`next`, `error` or
    /// `complete`), passing over the others' and answering pings; panics
    /// after `within`.
    pub async fn first_for(&mut self, id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await {
                Received::Json(m) if m["id"] == id => return m,
                Received::Json(m) if m["type"] == "ping" => {
                    self.send(json!({"type": "pong"})).await;
                }
                Received::Json(_) => {}
                other => panic!("expected a message for {id}, got {other:?}"),
            }
        }
    }

    /// Events (`payload.data.sessionEvents`) until `done` holds for one;
    /// all of them, that one last.
    pub async fn events_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let payload = self.next_payload(left).await;
            let event = payload["data"]["sessionEvents"].clone();
            assert!(event.is_object(), "not an event: {payload}");
            let stop = done(&event);
            seen.push(event);
            if stop {
                return seen;
            }
        }
    }

    /// Every `next` payload received within `quiet` (answering pings).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return seen;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return seen,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let m: Value = serde_json::from_str(&text).expect("JSON");
                    if m["type"] == "next" {
                        seen.push(m["payload"].clone());
                    } else if m["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return seen,
            }
        }
    }
}
