//! GraphQL over WebSocket on `/graphql`: subscriptions.
//!
//! Subprotocols `graphql-transport-ws` (the `graphql-ws` npm package's
//! protocol) and the legacy `graphql-ws` (subscriptions-transport-ws).
//! async-graphql's protocol engine (`async_graphql::http::WebSocket`) runs
//! the messages; this module wraps it with what it lacks:
//!
//! - **Initialisation**: the first message must be `connection_init`
//!   within `live.init_timeout_ms`, else the socket closes with 4408; any
//!   other first message closes it with 4401 (the protocol's "Unauthorized"
//!   for a subscribe before init), a malformed one with 4400. The init
//!   payload's `Authorization` (browsers cannot set headers on a WebSocket),
//!   or else the upgrade request's header, goes to [`authenticate_connection`];
//!   a refusal closes with 4403, and so does the expiry of what it accepted.
//! - **Keep-alive**: every `live.ping_interval_ms` the server sends a
//!   protocol ping (`{"type":"ping"}`; `{"type":"ka"}` on the legacy
//!   protocol), so load balancers never see an idle connection.
//! - **Sockets**: one replica holds at most `live.max_connections` sockets,
//!   those still waiting for `connection_init` included: one more upgrade
//!   is answered HTTP 503 `OVERLOADED` before it becomes a socket. Each
//!   `connection_init` takes one request from its caller's rate limit, and
//!   a caller may hold `live.max_connections_per_caller` sockets: past
//!   either, the socket is closed with 1013 (try again later; graphql-ws
//!   clients retry with back-off). See [`Sockets`].
//! - **Limits**: each connection may hold `live.max_subscriptions_per_connection`
//!   subscriptions ([`SubscriptionSlots`] in its data), and each
//!   subscription it starts (`subscribe`; `start` on the legacy protocol)
//!   takes one request from its principal's rate limit ([`super::rate`]),
//!   the same bucket as its HTTP requests. Over the rate, that subscription
//!   alone is refused with an `error` message (`RATE_LIMITED`, and
//!   `retryAfterSeconds` in its extensions, since a message has no
//!   `Retry-After` header); the socket and its other subscriptions carry
//!   on. Closing the socket would punish what already runs for what was
//!   refused.
//! - **Persisted queries and the safelist**: a subscription's document is
//!   resolved as an HTTP request's is (`extensions.persistedQuery`, then
//!   the safelist and `require_id`), and one named by hash reaches the
//!   engine with its document as `query` (the engine does not read
//!   hashes). A refusal (`PERSISTED_QUERY_NOT_FOUND`,
//!   `OPERATION_NOT_IN_SAFELIST`, `PERSISTED_QUERY_ID_REQUIRED`...) is an
//!   `error` message for that subscription alone, as for the rate limit.
//! - **Protocol rules the engine leaves out** (graphql-transport-ws): a
//!   `subscribe` under an id still running closes the socket with 4409
//!   ([`Subscribers`]); a message the engine cannot read, 1002 from it, is
//!   4400; a client's close frame is answered with one.
//! - **Shutdown**: every socket is tracked in [`Sockets`]; on shutdown each
//!   is sent a 1001 (going away) close, and the server waits for them up to
//!   `live.shutdown_grace_ms` (axum's graceful shutdown does not see
//!   upgraded connections).

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{HttpState, PersistedQueryError};
use crate::error::code;
use crate::graphql::GatewaySchema;
use crate::graphql::SubscriptionSlots;
use crate::instruments::Transport;
use crate::paging::RequestBudget;
use crate::sessions::Caller;
use crate::settings::LiveSettings;

/// The subprotocols spoken, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];
/// Client messages buffered before the engine reads them; a client that
/// floods more than this is closed.
const INBOX: usize = 64;
/// Each socket's read buffer. The WebSocket layer's default, 128 KiB,
/// is allocated and zeroed for every socket, open or idle, credentials or
/// none: 128 KiB a socket before `connection_init` (`bench/sockets.py`).
/// The gateway's messages are small; a longer one (up to
/// `http.body_limit_bytes`) is read in several reads.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Close codes (graphql-transport-ws, and RFC 6455's).
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The subscriptions running on one graphql-transport-ws socket, by id,
/// which the protocol keeps unique: a `subscribe` under an id still
/// running closes the socket with 4409 (the engine would silently replace
/// the first). An id is free again once the client completes it or the
/// server does. The legacy protocol has no such rule.
///
/// The engine ends every stream it was given with exactly one `complete`,
/// whether the stream ran out or the client completed it (then the
/// `complete` may come after the client has reused the id). So the
/// streams the engine holds are counted per id, and a `complete` frees the
/// id only when it leaves none.
#[derive(Default)]
struct Subscribers {
    /// Off for the legacy protocol.
    on: bool,
    /// Running as the client sees them: started, and not completed by
    /// either side.
    running: std::collections::HashSet<String>,
    /// Streams handed to the engine and not yet completed by it, per id.
    streams: HashMap<String, u32>,
}

/// The parts of a message that say which subscription it starts or ends.
#[derive(serde::Deserialize)]
struct Addressed<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

impl Subscribers {
    fn new(protocol: WebSocketProtocols) -> Self {
        Self {
            on: matches!(protocol, WebSocketProtocols::GraphQLWS),
            ..Self::default()
        }
    }

    /// A client message on its way to the engine; `Err(id)` when it starts
    /// a subscription under an id that is running.
    fn client(&mut self, text: &str) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        let Ok(Addressed { kind, id: Some(id) }) = serde_json::from_str(text) else {
            return Ok(());
        };
        match &*kind {
            "subscribe" => {
                if !self.running.insert(id.to_string()) {
                    return Err(id.into_owned());
                }
                *self.streams.entry(id.into_owned()).or_default() += 1;
            }
            "complete" => {
                self.running.remove(&*id);
            }
            _ => {}
        }
        Ok(())
    }

    /// A server message: a `complete` ends one of the engine's streams.
    /// (The engine writes `type` first; a `next`, the bulk of them, is not
    /// parsed.)
    fn server(&mut self, text: &str) {
        if !self.on || !text.starts_with(r#"{"type":"complete""#) {
            return;
        }
        let Ok(Addressed { id: Some(id), .. }) = serde_json::from_str(text) else {
            return;
        };
        if let Some(count) = self.streams.get_mut(&*id) {
            *count -= 1;
            if *count == 0 {
                self.streams.remove(&*id);
                self.running.remove(&*id);
            }
        }
    }
}

/// The open WebSockets of one gateway: bounded in all and per caller, and
/// closed on shutdown.
#[derive(Clone, Debug)]
pub struct Sockets {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// A permit per open socket (`live.max_connections`), taken before
    /// the upgrade: a client past the limit never gets a socket.
    slots: Arc<Semaphore>,
    /// Sockets past `connection_init`, by caller
    /// (`live.max_connections_per_caller`).
    callers: Arc<CallerSockets>,
}

impl Sockets {
    /// No socket yet; at most `live.max_connections` of them, and
    /// `live.max_connections_per_caller` of one caller's.
    pub fn new(live: &LiveSettings) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(live.max_connections as usize)),
            callers: Arc::new(CallerSockets::new(live.max_connections_per_caller as usize)),
        }
    }

    /// Tells every open socket to close with 1001, refuses new ones, and
    /// waits up to `grace` for them to finish; false if some did not.
    pub async fn close_all(&self, grace: Duration) -> bool {
        self.tracker.close();
        self.shutdown.cancel();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.tracker.len()
    }
}

/// How many sockets each caller holds open, each at most `max`.
#[derive(Debug)]
struct CallerSockets {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One socket of one caller, counted until dropped.
struct CallerSocket {
    callers: Arc<CallerSockets>,
    caller: String,
}

impl CallerSockets {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A socket for `caller`, unless it holds `max` already.
    fn claim(self: &Arc<Self>, caller: &str) -> Option<CallerSocket> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.entry(caller.to_owned()).or_default();
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(CallerSocket {
            callers: Arc::clone(self),
            caller: caller.to_owned(),
        })
    }

    /// Sockets `caller` holds.
    #[cfg(test)]
    fn held(&self, caller: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(caller).copied().unwrap_or(0)
    }
}

impl Drop for CallerSocket {
    fn drop(&mut self) {
        let mut open = self
            .callers
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = open.get_mut(&self.caller) {
            *held -= 1;
            // A caller gone leaves no entry: the map holds the callers
            // connected now, not every one ever seen.
            if *held == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// What [`authenticate_connection`] accepted.
#[derive(Clone)]
pub struct ConnectionAuth {
    /// Who is connected: the resolvers authorize by its grants.
    pub caller: Arc<Caller>,
    /// When the credentials stop being valid (a JWT's `exp`): the socket is
    /// closed with 4403 then. `None`: they do not expire.
    pub expires_at: Option<Instant>,
}

/// Why a connection was refused (the close reason; keep it vague).
#[derive(Clone, Debug)]
pub struct ConnectionRefused(pub String);

/// Decides whether a WebSocket may proceed, from the `Authorization` of its
/// `connection_init` payload (browsers cannot set headers on a WebSocket),
/// or else of its upgrade request, exactly as HTTP requests are
/// authenticated. `Err` closes the socket with 4403; the principal goes into
/// the connection's data for the resolvers.
pub async fn authenticate_connection(
    state: &HttpState,
    authorization: Option<&str>,
) -> Result<ConnectionAuth, ConnectionRefused> {
    let header = match authorization.map(HeaderValue::from_str) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(ConnectionRefused("malformed".to_owned())),
    };
    let principal = state
        .auth
        .authenticate(header.as_ref())
        .await
        .map_err(|e| ConnectionRefused(e.reason().to_owned()))?;
    let expires_at = principal.expires_at().map(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Instant::now() + left
    });
    Ok(ConnectionAuth {
        caller: Arc::new(Caller::new(principal)),
        expires_at,
    })
}

/// `GET /graphql` with `Upgrade: websocket`.
pub fn upgrade(state: HttpState, headers: &HeaderMap, ws: WebSocketUpgrade) -> Response {
    // axum's defaults (64 MiB messages) would let a client, before it has
    // even sent its credentials, make the gateway hold that much.
    let limit = state.limits.message_bytes;
    let ws = ws
        .protocols(SUBPROTOCOLS)
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit);
    let Some(protocol) = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| WebSocketProtocols::from_str(p).ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "offer the subprotocol graphql-transport-ws (or the legacy graphql-ws)",
        )
            .into_response();
    };
    let upgrade_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sockets = state.sockets.clone();
    if sockets.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // Taken before the upgrade and held by the socket to its end, so the
    // limit is exact however many upgrades race.
    let Ok(slot) = Arc::clone(&sockets.slots).try_acquire_owned() else {
        state.metrics.websocket_connection("overloaded");
        return super::overloaded(
            "the gateway holds as many WebSockets as it may (live.max_connections); retry shortly",
        );
    };
    ws.on_upgrade(move |socket| {
        sockets.tracker.track_future(async move {
            serve_socket(socket, state, protocol, upgrade_authorization).await;
            drop(slot);
        })
    })
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    // The peer may be gone already; nothing to do about it.
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The longest start of `reason` a close frame carries: 123 bytes (a
/// control frame's 125, less the code), cut at a character boundary. A
/// longer one would fail to send, and the client would see the socket
/// dropped (1006) instead of the code and why.
fn close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// After a failed read: a message over the size limit is told so (1009);
/// any other failure leaves nothing to tell.
async fn read_failed(socket: &mut WebSocket, error: &axum::Error) {
    // The WebSocket layer's error type is not public through axum: its
    // text names the case ("Space limit exceeded: Message too long").
    if error.to_string().contains("Message too long") {
        send_close(socket, close::TOO_BIG, "Message too big").await;
    }
}

/// Completes a closing handshake the client started: its close frame was
/// read, and the echo the protocol requires (RFC 6455, 5.5.1), queued by
/// the WebSocket layer, is sent now. Without it the socket would just be
/// dropped, and the client would see an abnormal closure (1006) where it
/// asked for a normal one.
async fn answer_close(socket: &mut WebSocket) {
    // The peer may be gone already; nothing to do about it.
    let _ = futures_util::SinkExt::flush(socket).await;
}

/// The next text (or binary) message; `None` when the socket closed.
async fn next_text(socket: &mut WebSocket) -> Option<String> {
    while let Some(message) = socket.recv().await {
        match message {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Binary(bytes)) => {
                return Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) => {
                answer_close(socket).await;
                return None;
            }
            Err(e) => {
                read_failed(socket, &e).await;
                return None;
            }
        }
    }
    None
}

/// What the protocol engine runs operations on: the full schema, each
/// operation with an upstream budget of its own (`RequestBudget`), as an
/// HTTP request has. graphql-transport-ws carries queries and mutations
/// too (a `subscribe` of any operation, answered with one `next`), and so
/// does the legacy protocol's `start`; their resolvers need the budget.
#[derive(Clone)]
struct Operations {
    schema: GatewaySchema,
    calls_per_source: usize,
}

impl async_graphql::Executor for Operations {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        let budget = RequestBudget::new(self.calls_per_source);
        self.schema.execute(request.data(budget)).await
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        let budget = RequestBudget::new(self.calls_per_source);
        self.schema.execute_stream_with_session_data(
            request.data(budget),
            session_data.unwrap_or_default(),
        )
    }
}

/// After its credentials: a socket takes one request from its caller's
/// rate limit, and one of the sockets the caller may hold. Past either it
/// is closed with 1013 (try again later) and `None` returned; else the
/// caller's socket, held while it is open.
async fn admit_connection(
    state: &HttpState,
    caller: &Caller,
    socket: &mut WebSocket,
) -> Option<CallerSocket> {
    let principal = caller.principal.to_string();
    if let Err(limited) = state.rates.check_everywhere(&principal).await {
        let secs = limited.retry_after_secs();
        state.metrics.rate_limited(Transport::WebSocket);
        state.metrics.websocket_connection("rate_limited");
        tracing::info!(
            target: "audit",
            principal = %caller.principal,
            outcome = "rate_limited",
            retry_after_secs = secs,
            "connection refused"
        );
        let reason = format!("Too many requests; retry in {secs} s");
        send_close(socket, close::TRY_AGAIN_LATER, &reason).await;
        return None;
    }
    let held = state.sockets.callers.claim(&principal);
    if held.is_none() {
        state.metrics.websocket_connection("caller_limit");
        tracing::info!(
            target: "audit",
            principal = %caller.principal,
            outcome = "too_many_connections",
            "connection refused"
        );
        let reason = "Too many connections for this caller";
        send_close(socket, close::TRY_AGAIN_LATER, reason).await;
    }
    held
}

/// Sleeps until `at`, or forever when `None`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn serve_socket(
    mut socket: WebSocket,
    state: HttpState,
    protocol: WebSocketProtocols,
    upgrade_authorization: Option<String>,
) {
    let live = state.live.clone();
    let shutdown = state.sockets.shutdown.clone();
    let metrics = state.metrics.clone();

    // 1. connection_init, within the timeout.
    let connecting = metrics.websocket_connecting();
    let first = tokio::select! {
        first = tokio::time::timeout(Duration::from_millis(live.init_timeout_ms), next_text(&mut socket)) => first,
        () = shutdown.cancelled() => {
            metrics.websocket_connection("shutdown");
            send_close(&mut socket, close::GOING_AWAY, "server shutting down").await;
            return;
        }
    };
    let init = match first {
        Err(_) => {
            metrics.websocket_connection("init_timeout");
            send_close(
                &mut socket,
                close::INIT_TIMEOUT,
                "Connection initialisation timeout",
            )
            .await;
            return;
        }
        Ok(None) => {
            metrics.websocket_connection("closed");
            return;
        }
        Ok(Some(text)) => text,
    };
    // Not a message at all (not JSON, or JSON with no `type`): 4400; a
    // message, but not the one that must come first: 4401.
    let message = serde_json::from_str::<serde_json::Value>(&init).ok();
    let Some(kind) = message.as_ref().and_then(|m| m["type"].as_str()) else {
        metrics.websocket_connection("bad_request");
        send_close(&mut socket, close::BAD_REQUEST, "Invalid message").await;
        return;
    };
    if kind != "connection_init" {
        metrics.websocket_connection("refused");
        send_close(&mut socket, close::UNAUTHORIZED, "Unauthorized").await;
        return;
    }
    let message = message.unwrap_or_default();
    let authorization = message["payload"]["Authorization"]
        .as_str()
        .or(message["payload"]["authorization"].as_str())
        .or(upgrade_authorization.as_deref());
    let auth = match authenticate_connection(&state, authorization).await {
        Ok(auth) => auth,
        Err(ConnectionRefused(reason)) => {
            metrics.websocket_connection("refused");
            tracing::info!(reason, "WebSocket connection refused");
            send_close(&mut socket, close::FORBIDDEN, "Forbidden").await;
            return;
        }
    };

    let Some(_held) = admit_connection(&state, &auth.caller, &mut socket).await else {
        return;
    };
    metrics.websocket_connection("accepted");
    drop(connecting);
    let _open = metrics.websocket_open();

    // 2. The protocol engine, fed by an inbox that starts with the init.
    let (inbox, rx) = mpsc::channel::<String>(INBOX);
    // The channel is empty and its receiver alive: this cannot fail.
    let _ = inbox.try_send(init);
    let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    let slots = SubscriptionSlots::new(live.max_subscriptions_per_connection, metrics.clone());
    let caller = auth.caller.clone();
    let operations = Operations {
        schema: state.schema.schema().clone(),
        calls_per_source: state.limits.calls_per_source,
    };
    let engine = async_graphql::http::WebSocket::new(operations, incoming, protocol)
        .on_connection_init(move |_payload| async move {
            let mut data = Data::default();
            data.insert(slots);
            data.insert(caller);
            Ok(data)
        });
    let mut engine = std::pin::pin!(engine);
    let ping_every = Duration::from_millis(live.ping_interval_ms);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let ping_message = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let expiry = until(auth.expires_at);
    let mut expiry = std::pin::pin!(expiry);
    let mut subscribers = Subscribers::new(protocol);

    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    let screened = screen(&state, &auth.caller, protocol, text).await;
                    if !pass(&mut socket, &inbox, &mut subscribers, screened).await {
                        break;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let screened = screen(&state, &auth.caller, protocol, text).await;
                    if !pass(&mut socket, &inbox, &mut subscribers, screened).await {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    answer_close(&mut socket).await;
                    break;
                }
                Some(Err(e)) => {
                    read_failed(&mut socket, &e).await;
                    break;
                }
                None => break,
            },
            outgoing = engine.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    subscribers.server(&text);
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    // The engine closes with 1002 on a message it cannot
                    // read; graphql-transport-ws says 4400 for that.
                    let code = match (code, protocol) {
                        (1002, WebSocketProtocols::GraphQLWS) => close::BAD_REQUEST,
                        _ => code,
                    };
                    send_close(&mut socket, code, &reason).await;
                    break;
                }
                None => break,
            },
            _ = ping.tick() => {
                if socket.send(Message::Text(ping_message.into())).await.is_err() {
                    break;
                }
            }
            () = shutdown.cancelled() => {
                send_close(&mut socket, close::GOING_AWAY, "server shutting down").await;
                break;
            }
            () = &mut expiry => {
                send_close(&mut socket, close::FORBIDDEN, "Forbidden: credentials expired").await;
                break;
            }
        }
    }
}

/// What the engine gets of a client's message: the message (its document
/// filled in when it named one by hash), or nothing, with the answer the
/// gateway sends in its stead.
enum Screened {
    Engine(String),
    Refused(String),
}

/// Hands a screened message on: to the engine, or its refusal to the
/// client. `false` when the socket is done (closed: flooding the engine,
/// or starting a subscription under an id already running).
async fn pass(
    socket: &mut WebSocket,
    inbox: &mpsc::Sender<String>,
    subscribers: &mut Subscribers,
    screened: Screened,
) -> bool {
    match screened {
        Screened::Refused(answer) => socket.send(Message::Text(answer.into())).await.is_ok(),
        Screened::Engine(text) => {
            if let Err(id) = subscribers.client(&text) {
                let reason = format!("Subscriber for {id} already exists");
                send_close(socket, close::SUBSCRIBER_EXISTS, &reason).await;
                return false;
            }
            if inbox.try_send(text).is_err() {
                send_close(socket, close::POLICY, "Too many messages").await;
                return false;
            }
            true
        }
    }
}

/// The start of a subscription, as far as persisted queries, the safelist
/// and the rate limit care.
#[derive(serde::Deserialize)]
struct Start<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    id: Option<String>,
    #[serde(default, borrow)]
    payload: Option<StartPayload<'a>>,
}

#[derive(serde::Deserialize)]
struct StartPayload<'a> {
    #[serde(default, borrow)]
    query: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A client's message `text`, screened as the HTTP side screens a request:
/// a subscription's document is resolved as an HTTP request's is
/// ([`super::resolve_document`]: by `extensions.persistedQuery`, against
/// the safelist), and the subscription takes one request from its caller's
/// rate limit. Refused (a persisted-query error, or the caller over its
/// rate), it gets the protocol's `error` message instead; named by hash, it
/// reaches the engine with its document as `query`. Every other message,
/// and anything unparsable, is the engine's as sent.
async fn screen(
    state: &HttpState,
    caller: &Caller,
    protocol: WebSocketProtocols,
    text: String,
) -> Screened {
    let Ok(start) = serde_json::from_str::<Start>(&text) else {
        return Screened::Engine(text);
    };
    if start.kind != "subscribe" && start.kind != "start" {
        return Screened::Engine(text);
    }
    let (query, extensions) = match start.payload {
        Some(payload) => (payload.query.map(|q| q.into_owned()), payload.extensions),
        None => (None, None),
    };
    let by_hash = query.as_deref().is_none_or(str::is_empty);
    let id = start.id;
    let refuse =
        |error: serde_json::Value| Screened::Refused(error_message(protocol, id.as_deref(), error));
    let document = match super::resolve_document(state, query, extensions.as_ref()).await {
        Ok(document) => document,
        Err(refused) => {
            let outcome = match refused {
                PersistedQueryError::NotInSafelist => "not_in_safelist",
                _ => "persisted_query_refused",
            };
            tracing::info!(
                target: "audit",
                principal = %caller.principal,
                outcome,
                code = refused.code(),
                subscription = id.as_deref().unwrap_or("-"),
                "subscription refused"
            );
            return refuse(serde_json::json!({
                "message": refused.message(),
                "extensions": { "code": refused.code() },
            }));
        }
    };
    if let Some(limited) = state
        .rates
        .check_everywhere(&caller.principal.to_string())
        .await
        .err()
    {
        let secs = limited.retry_after_secs();
        state.metrics.rate_limited(Transport::WebSocket);
        tracing::info!(
            target: "audit",
            principal = %caller.principal,
            outcome = "rate_limited",
            subscription = id.as_deref().unwrap_or("-"),
            retry_after_secs = secs,
            "subscription refused"
        );
        return refuse(serde_json::json!({
            "message": format!("too many requests from this caller; retry in {secs} s"),
            "extensions": { "code": code::RATE_LIMITED, "retryAfterSeconds": secs },
        }));
    }
    match document {
        Some(document) if by_hash => Screened::Engine(with_query(&text, document).unwrap_or(text)),
        _ => Screened::Engine(text),
    }
}

/// The message `text` with `document` as its payload's `query`.
fn with_query(text: &str, document: String) -> Option<String> {
    let mut message: serde_json::Value = serde_json::from_str(text).ok()?;
    message
        .get_mut("payload")?
        .as_object_mut()?
        .insert("query".to_owned(), serde_json::Value::String(document));
    Some(message.to_string())
}

/// The protocol's `error` message for one operation: graphql-transport-ws
/// sends a list of GraphQL errors, the legacy protocol one error.
fn error_message(
    protocol: WebSocketProtocols,
    id: Option<&str>,
    error: serde_json::Value,
) -> String {
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
        WebSocketProtocols::SubscriptionsTransportWS => error,
    };
    serde_json::json!({ "id": id, "type": "error", "payload": payload }).to_string()
}

#[cfg(test)]
mod tests {
    use super::{CallerSockets, Subscribers, close_reason};
    use async_graphql::http::WebSocketProtocols;
    use std::sync::Arc;

    fn subscribe(id: &str) -> String {
        format!(r#"{{"id":"{id}","type":"subscribe","payload":{{"query":"{{ a }}"}}}}"#)
    }

    fn complete(id: &str) -> String {
        format!(r#"{{"type":"complete","id":"{id}"}}"#)
    }

    #[test]
    fn a_caller_holds_at_most_its_sockets_and_gets_them_back() {
        let callers = Arc::new(CallerSockets::new(2));
        let first = callers.claim("api_key:a").expect("one");
        let second = callers.claim("api_key:a").expect("two");
        assert!(callers.claim("api_key:a").is_none(), "a third");
        // Another caller has sockets of its own.
        let other = callers.claim("jwt:b").expect("another caller's");
        drop(first);
        assert_eq!(callers.held("api_key:a"), 1);
        let again = callers.claim("api_key:a").expect("one given back");
        assert!(callers.claim("api_key:a").is_none());
        drop((second, again, other));
        assert_eq!(callers.held("api_key:a"), 0);
        let open = callers.open.lock().expect("not poisoned");
        assert!(open.is_empty(), "callers gone leave no entry: {open:?}");
    }

    #[test]
    fn a_subscription_id_is_free_once_either_side_completes_it() {
        let mut s = Subscribers::new(WebSocketProtocols::GraphQLWS);
        assert_eq!(s.client(&subscribe("1")), Ok(()));
        assert_eq!(s.client(&subscribe("1")), Err("1".to_owned()), "running");
        // The server completes it: free.
        s.server(&complete("1"));
        assert_eq!(s.client(&subscribe("1")), Ok(()));
        // The client completes it and starts it again before the engine's
        // `complete` for the first stream arrives: that one frees nothing.
        s.client(&complete("1")).unwrap();
        assert_eq!(s.client(&subscribe("1")), Ok(()));
        s.server(&complete("1"));
        assert_eq!(
            s.client(&subscribe("1")),
            Err("1".to_owned()),
            "the second runs"
        );
        s.server(&complete("1"));
        assert_eq!(s.client(&subscribe("1")), Ok(()));
        // The client completes one the server has already completed: the
        // engine says nothing more, and the id stays free.
        s.server(&complete("1"));
        s.client(&complete("1")).unwrap();
        assert_eq!(s.client(&subscribe("1")), Ok(()));
        // `next` messages, other ids and unknown ids change nothing.
        s.server(r#"{"type":"next","id":"1","payload":{}}"#);
        s.server(&complete("nobody"));
        assert_eq!(s.client(&subscribe("1")), Err("1".to_owned()));
        assert_eq!(s.client(&subscribe("2")), Ok(()));
        // The legacy protocol has no such rule.
        let mut legacy = Subscribers::new(WebSocketProtocols::SubscriptionsTransportWS);
        assert_eq!(legacy.client(&subscribe("1")), Ok(()));
        assert_eq!(legacy.client(&subscribe("1")), Ok(()));
    }

    #[test]
    fn a_close_reason_is_cut_to_what_a_frame_holds() {
        assert_eq!(close_reason("short"), "short");
        let long = "x".repeat(200);
        assert_eq!(close_reason(&long).len(), 123);
        // Not through a character: "é" is two bytes, the cut falls inside
        // the 62nd.
        let accented = "é".repeat(100);
        let cut = close_reason(&accented);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
