//! `GET /v1/realtime`: Appwrite's realtime WebSocket, as the web SDK speaks it. A connection
//! names its project in the URL, comes as a user by cookie, fallback cookie, JWT or a later
//! `authentication` message, and subscribes by `subscribe`/`unsubscribe` messages (or, the
//! legacy way, `channels[]` in the URL). Events come from this node's hub, fed by apply, so a
//! subscriber here sees writes taken by any node, in commit order, and only what its user
//! may read.
//!
//! Beyond Appwrite, every event carries a `cursor` (`<log index>.<place>`, the same on every
//! node). A client that reconnects with `after=<cursor>` in its URL receives, right after its
//! first subscription, the events it missed that the node still keeps (its last
//! `RING_CHANGES` changes, at most `RING_BYTES`), then `{"type":"response","data":{"to":
//! "resume",...}}`; or, when they are no longer kept, that response with `success: false`.

mod events;
mod filter;
pub mod hub;

use crate::auth::Identity;
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use filter::Filter;
use hub::{Cursor, Resumed, Sub};
use model::reader::Consistency;
use serde_json::{json, Map, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use hub::{Hub, LocalState, ReadRules};

/// The largest message a client may send (Appwrite's).
const MAX_MESSAGE: usize = 64_000;
/// What a connection's reader holds before it grows for a larger message.
const READ_BUFFER: usize = 4096;
/// Messages a connection may send per minute (Appwrite's), pings included.
const MESSAGES_PER_MINUTE: usize = 32;
/// Subscriptions per connection, channels per subscription, queries per subscription.
const MAX_SUBSCRIPTIONS: usize = 100;
const MAX_CHANNELS: usize = 100;
const MAX_QUERIES: usize = 100;
const MAX_CHANNEL_LEN: usize = 512;
const MAX_QUERY_LEN: usize = 4096;
/// The text of a connection's channels and queries, in all.
const MAX_SUBSCRIPTION_TEXT: usize = 256 << 10;
/// Connections one node serves at once.
const MAX_CONNECTIONS: usize = 50_000;
/// How often the server pings, and how long a silent client is kept.
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENT_FOR: Duration = Duration::from_secs(100);
/// How long one message may take to go out before the client counts as gone (the hub closes
/// a client stalled for 10 s with events waiting first), and how long a closing error may.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/realtime", get(upgrade))
}

async fn upgrade(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return crate::error::ApiError::new(
                model::ErrorCode::GeneralArgumentInvalid,
                "The realtime endpoint speaks WebSocket only.",
            )
            .into_response()
        }
    };
    // Small buffers: most connections are idle most of the time (tungstenite's defaults, 128
    // KiB each way, would make an idle connection cost ~180 KiB). Every send is flushed.
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let mut c = Connection {
                s,
                socket,
                id: 0,
                project: String::new(),
                pending_after: None,
                sent: Vec::new(),
            };
            c.run(headers, uri).await;
        })
}

fn message(kind: &str, data: Json) -> Utf8Bytes {
    Utf8Bytes::from(json!({ "type": kind, "data": data }).to_string())
}

fn error(code: u16, text: &str) -> Utf8Bytes {
    message("error", json!({ "code": code, "message": text }))
}

/// Why a client's message was refused: the code and message of the error it gets.
struct Refusal(u16, String);

fn invalid(text: impl Into<String>) -> Refusal {
    Refusal(1003, text.into())
}

struct Connection {
    s: AppState,
    socket: WebSocket,
    id: u64,
    project: String,
    /// The cursor the client resumes after, until its first subscription.
    pending_after: Option<Cursor>,
    /// When the client's latest messages came (the rate limit's window).
    sent: Vec<Instant>,
}

/// Takes the connection out of the hub however its task ends.
struct Registered(Arc<Hub>, u64);
impl Drop for Registered {
    fn drop(&mut self) {
        self.0.disconnect(self.1);
    }
}

impl Connection {
    fn hub(&self) -> &Arc<Hub> {
        &self.s.realtime
    }

    async fn send(&mut self, text: Utf8Bytes) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(text))).await,
            Ok(Ok(()))
        )
    }

    /// Sends an error and closes with `code`.
    async fn close(&mut self, code: u16, text: &str) {
        self.close_as(code, code, text).await
    }

    /// Sends an error with `code` (an HTTP status for some), and closes with `close` (a
    /// WebSocket close code).
    async fn close_as(&mut self, code: u16, close: u16, text: &str) {
        // A client that fell behind gets a while to read up to the error.
        let sent = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.socket.send(Message::Text(error(code, text))),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            // A close frame's reason is at most 123 bytes.
            let mut reason = String::new();
            for ch in text.chars() {
                if reason.len() + ch.len_utf8() > 120 {
                    break;
                }
                reason.push(ch);
            }
            let frame = CloseFrame {
                code: close,
                reason: Utf8Bytes::from(reason),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame))))
                    .await;
        }
    }

    /// Who the connection comes as (`auth::identify`); `None` once it has been closed for an
    /// invalid JWT (1008, with the HTTP error's code and text) or a failed read.
    async fn identify(
        &mut self,
        view: &dyn model::reader::StateReader,
        headers: &HeaderMap,
        jwt: Option<&str>,
        project: &str,
    ) -> Option<Option<Identity>> {
        match crate::auth::identify(view, headers, jwt, project) {
            Ok(i) => Some(i),
            Err(e) if e.is_refusal() => {
                let code = e.0.code.status();
                self.close_as(code, 1008, &e.0.message.text()).await;
                None
            }
            Err(_) => {
                self.close(1013, "The cluster cannot serve this connection right now.")
                    .await;
                None
            }
        }
    }

    async fn run(&mut self, headers: HeaderMap, uri: Uri) {
        let params = crate::params::parse_query(uri.query().unwrap_or(""));
        let text = |k: &str| params.get(k).and_then(Json::as_str).map(str::to_string);
        let Ok(Some(project)) = crate::auth::project_from(&headers, uri.query()) else {
            return self.close(1008, "Missing or unknown project ID").await;
        };
        let view = match self.s.backend.read(Consistency::Linearizable).await {
            Ok(v) => v,
            Err(_) => {
                return self
                    .close(1013, "The cluster cannot serve this connection right now.")
                    .await
            }
        };
        if !matches!(view.project(&project), Ok(Some(_))) {
            return self.close(1008, "Missing or unknown project ID").await;
        }
        if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
            if !crate::cors::allowed(&self.s, Some(&project), origin).await {
                let host = crate::cors::origin_host(origin).unwrap_or_default();
                let text = format!("Invalid Origin. Register your new client ({host}) as a new Web platform on your project console dashboard");
                return self.close(1008, &text).await;
            }
        }
        let jwt = text("jwt");
        let Some(mut ident) = self
            .identify(&*view, &headers, jwt.as_deref(), &project)
            .await
        else {
            return;
        };
        if self.hub().connections() >= MAX_CONNECTIONS {
            return self
                .close(1013, "This node serves as many connections as it can.")
                .await;
        }
        self.pending_after = match text("after") {
            Some(a) => match a.parse() {
                Ok(c) => Some(c),
                Err(()) => {
                    return self
                        .close(1008, "`after` is not a cursor an event gave.")
                        .await
                }
            },
            None => None,
        };
        // Read again if the hub no longer keeps what changed since (rare: a burst of writes).
        let mut tries = 0;
        let reg = loop {
            match self.hub().connect(&project, ident.clone()) {
                Ok(r) => break r,
                Err(hub::Stale) if tries < 3 => {
                    tries += 1;
                    let Ok(v) = self.s.backend.read(Consistency::Linearizable).await else {
                        return self
                            .close(1013, "The cluster cannot serve this connection right now.")
                            .await;
                    };
                    let Some(again) = self.identify(&*v, &headers, jwt.as_deref(), &project).await
                    else {
                        return;
                    };
                    ident = again;
                }
                Err(hub::Stale) => {
                    return self
                        .close(
                            1013,
                            "The cluster is too busy to serve this connection right now.",
                        )
                        .await;
                }
            }
        };
        let hub::Registration {
            id,
            mut events,
            progress,
            closing,
        } = reg;
        let _registered = Registered(self.hub().clone(), id);
        let user = ident.as_ref().map(|i| i.user.id.clone());
        let user_json = ident
            .as_ref()
            .map(|i| crate::users::user_json(&i.user, false));
        self.id = id;
        self.project = project;

        // The legacy way: channels (and their queries) in the URL, one subscription each.
        let url_channels: Vec<String> = match params.get("channels") {
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect(),
            Some(Json::String(c)) => vec![c.clone()],
            _ => Vec::new(),
        };
        let mut channels_out = Vec::new();
        let mut ids_out = Vec::new();
        let mut resumed = None;
        if !url_channels.is_empty() {
            let mut subs = Vec::new();
            for ch in url_channels.iter().take(MAX_SUBSCRIPTIONS) {
                let queries: Vec<Json> = match params.get(&ch.replace('.', "_")) {
                    Some(Json::Array(q)) => q.clone(),
                    Some(q @ Json::String(_)) => vec![q.clone()],
                    _ => Vec::new(),
                };
                let filters = match parse_filters(&queries) {
                    Ok(f) => f,
                    Err(Refusal(_, text)) => {
                        let text = text.trim_start_matches("Invalid query: ").to_string();
                        return self.close(1008, &text).await;
                    }
                };
                let sid = crate::params::new_id();
                channels_out.extend(shown_channels(std::slice::from_ref(ch), user.as_deref()));
                ids_out.push(Json::from(sid.clone()));
                let weight = ch.len() + queries.iter().map(|q| q.to_string().len()).sum::<usize>();
                if ch.len() > MAX_CHANNEL_LEN || weight > MAX_SUBSCRIPTION_TEXT {
                    return self
                        .close(1008, "A channel or its queries are too long.")
                        .await;
                }
                subs.push((
                    sid,
                    Sub {
                        channels: vec![ch.clone()],
                        filters,
                        weight,
                    },
                ));
            }
            let after = self.pending_after.take();
            let hub = self.hub().clone();
            resumed = tokio::task::block_in_place(move || hub.subscribe(id, subs, after));
        }
        let connected = message(
            "connected",
            json!({
                "channels": channels_out,
                "subscriptions": ids_out,
                "user": user_json,
            }),
        );
        if !self.send(connected).await {
            return;
        }
        if let Some(r) = resumed {
            if !self.replay(r).await {
                return;
            }
        }

        let mut ticker = tokio::time::interval(PING_EVERY);
        ticker.tick().await;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                incoming = self.socket.recv() => {
                    let Some(Ok(msg)) = incoming else { return };
                    heard = Instant::now();
                    let reply = match msg {
                        Message::Text(t) => self.handle(t.as_str()).await,
                        Message::Binary(_) => Err(invalid("Message format is not valid.")),
                        Message::Close(_) => return,
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    let ok = match reply {
                        Ok(Some(out)) => {
                            let mut ok = true;
                            for m in out {
                                ok = ok && self.send(m).await;
                            }
                            ok
                        }
                        Ok(None) => true,
                        Err(Refusal(code, text)) if code == 1008 => {
                            return self.close(code, &text).await;
                        }
                        Err(Refusal(code, text)) => self.send(error(code, &text)).await,
                    };
                    if !ok {
                        return;
                    }
                }
                event = events.recv() => match event {
                    Some(out) => {
                        // A client that stopped reading is closed by the hub while this
                        // send waits: the error goes after what it has not read yet.
                        let sent = tokio::select! {
                            sent = self.send(out.text()) => sent,
                            _ = closing.wake.notified() => {
                                let (code, text) = closing.reason();
                                return self.close(code, &text).await;
                            }
                        };
                        progress.sent();
                        if !sent {
                            return;
                        }
                    }
                    None => {
                        let (code, text) = closing.reason();
                        return self.close(code, &text).await;
                    }
                },
                _ = closing.wake.notified() => {
                    let (code, text) = closing.reason();
                    return self.close(code, &text).await;
                }
                _ = ticker.tick() => {
                    if heard.elapsed() > SILENT_FOR {
                        return self.close(1001, "The connection was silent for too long.").await;
                    }
                    let ping = tokio::time::timeout(
                        SEND_TIMEOUT,
                        self.socket.send(Message::Ping(bytes::Bytes::new())),
                    );
                    if !matches!(ping.await, Ok(Ok(()))) {
                        return;
                    }
                }
            }
        }
    }

    /// Sends what a resume found, then says how it went.
    async fn replay(&mut self, r: Resumed) -> bool {
        let report = match r {
            Resumed::Replayed(msgs) => {
                let n = msgs.len();
                for m in msgs {
                    if !self.send(m).await {
                        return false;
                    }
                }
                json!({ "to": "resume", "success": true, "replayed": n })
            }
            Resumed::TooOld { kept_after } => {
                let kept = match kept_after {
                    Some(c) => format!("it keeps those after {c}"),
                    None => "it has kept none since it started".to_string(),
                };
                json!({
                    "to": "resume",
                    "success": false,
                    "message": format!("The events after this cursor are no longer kept on this node ({kept}); load the current state again."),
                })
            }
        };
        self.send(message("response", report)).await
    }

    /// Answers one message from the client (`Ok(None)`: nothing to say).
    async fn handle(&mut self, text: &str) -> Result<Option<Vec<Utf8Bytes>>, Refusal> {
        let now = Instant::now();
        self.sent
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if self.sent.len() >= MESSAGES_PER_MINUTE {
            return Err(Refusal(1013, "Too many messages.".into()));
        }
        self.sent.push(now);
        let msg: Map<String, Json> = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(m)) if m.contains_key("type") || m.contains_key("data") => m,
            _ => return Err(invalid("Message format is not valid.")),
        };
        let data = msg.get("data");
        match msg.get("type").and_then(Json::as_str) {
            Some("ping") => Ok(Some(vec![Utf8Bytes::from_static(r#"{"type":"pong"}"#)])),
            Some("authentication") => self.authenticate(data).await.map(Some),
            Some("subscribe") => self.subscribe(data).await.map(Some),
            Some("unsubscribe") => self.unsubscribe(data).map(Some),
            Some("presence") => Err(invalid("Presence is not supported by this server.")),
            _ => Err(invalid("Message type is not valid.")),
        }
    }

    async fn authenticate(&mut self, data: Option<&Json>) -> Result<Vec<Utf8Bytes>, Refusal> {
        let session = data
            .and_then(|d| d.get("session"))
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("Payload is not valid. Session is required"))?;
        if session.len() > 2048 {
            return Err(invalid("Session is not valid."));
        }
        let view = self
            .s
            .backend
            .read(Consistency::Linearizable)
            .await
            .map_err(|_| Refusal(1013, "The cluster cannot check sessions right now.".into()))?;
        let ident: Identity = crate::auth::identify_session(&*view, &self.project, session)
            .ok()
            .flatten()
            .ok_or_else(|| invalid("Session is not valid."))?;
        let user = crate::users::user_json(&ident.user, false);
        if self.hub().set_identity(self.id, Some(ident)).is_err() {
            // What changed since the session was read is no longer kept: try again.
            return Err(Refusal(
                1013,
                "The cluster is busy; authenticate again.".into(),
            ));
        }
        Ok(vec![message(
            "response",
            json!({ "to": "authentication", "success": true, "user": user }),
        )])
    }

    async fn subscribe(&mut self, data: Option<&Json>) -> Result<Vec<Utf8Bytes>, Refusal> {
        let items = match data {
            None | Some(Json::Null) => {
                return Err(invalid("Payload is not valid. Items is required"))
            }
            Some(Json::Array(items)) => items,
            Some(_) => return Err(invalid("items: Payload is not valid.")),
        };
        let mut subs = Vec::new();
        let mut shown = Vec::new();
        let user = self.hub().identity(self.id).map(|i| i.user.id);
        for item in items {
            let Json::Object(item) = item else {
                return Err(invalid("items: Each subscribe payload must be an object."));
            };
            let sid = match item.get("subscriptionId") {
                None | Some(Json::Null) => crate::params::new_id(),
                Some(Json::String(s)) if model::id::is_valid(s) => s.clone(),
                Some(_) => return Err(invalid("items: subscriptionId is not a valid id.")),
            };
            let channels = match item.get("channels") {
                None => return Err(invalid("items: channels is not present in payload.")),
                Some(Json::Array(c)) => c,
                Some(_) => return Err(invalid("items: channels is not a valid array.")),
            };
            if channels.len() > MAX_CHANNELS {
                return Err(invalid(format!(
                    "items: a subscription names at most {MAX_CHANNELS} channels."
                )));
            }
            let channels = channels
                .iter()
                .map(|c| match c.as_str() {
                    Some(c) if c.len() <= MAX_CHANNEL_LEN => Ok(c.to_string()),
                    _ => Err(invalid("items: channels must contain only strings.")),
                })
                .collect::<Result<Vec<String>, _>>()?;
            let queries = match item.get("queries") {
                None | Some(Json::Null) => Vec::new(),
                Some(Json::Array(q)) => q.clone(),
                Some(_) => return Err(invalid("items: queries is not a valid array.")),
            };
            let filters = parse_filters(&queries)?;
            let query_text: Vec<Json> = queries
                .iter()
                .map(|q| match q {
                    Json::String(s) => Json::String(s.clone()),
                    q => Json::String(q.to_string()),
                })
                .collect();
            shown.push(json!({
                "subscriptionId": sid,
                "channels": shown_channels(&channels, user.as_deref()),
                "queries": query_text,
            }));
            let weight = channels.iter().map(String::len).sum::<usize>()
                + queries.iter().map(|q| q.to_string().len()).sum::<usize>();
            subs.push((
                sid,
                Sub {
                    channels,
                    filters,
                    weight,
                },
            ));
        }
        let (count, text) = self.hub().would_hold(self.id, &subs);
        if count > MAX_SUBSCRIPTIONS {
            return Err(invalid(format!(
                "items: a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions."
            )));
        }
        if text > MAX_SUBSCRIPTION_TEXT {
            return Err(invalid(format!(
                "items: a connection's channels and queries are at most {MAX_SUBSCRIPTION_TEXT} characters in all."
            )));
        }
        let after = match subs.is_empty() {
            true => None,
            false => self.pending_after.take(),
        };
        let resumed = match after {
            // A replay is made under the hub's lock: off the runtime's workers.
            Some(_) => {
                let (hub, id) = (self.hub().clone(), self.id);
                tokio::task::block_in_place(move || hub.subscribe(id, subs, after))
            }
            None => self.hub().subscribe(self.id, subs, None),
        };
        let reply = message(
            "response",
            json!({ "to": "subscribe", "success": true, "subscriptions": shown }),
        );
        if !self.send(reply).await {
            return Ok(Vec::new());
        }
        if let Some(r) = resumed {
            self.replay(r).await;
        }
        Ok(Vec::new())
    }

    fn unsubscribe(&mut self, data: Option<&Json>) -> Result<Vec<Utf8Bytes>, Refusal> {
        let items = match data {
            None | Some(Json::Null) => {
                return Err(invalid("Payload is not valid. Items is required"))
            }
            Some(Json::Array(items)) => items,
            Some(_) => return Err(invalid("items: Payload is not valid.")),
        };
        let sids = items
            .iter()
            .map(|i| {
                i.get("subscriptionId")
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        invalid("items: Each unsubscribe payload must include a non-empty subscriptionId.")
                    })
            })
            .collect::<Result<Vec<String>, _>>()?;
        let removed = self.hub().unsubscribe(self.id, &sids);
        let out: Vec<Json> = sids
            .iter()
            .zip(removed)
            .map(|(s, r)| json!({ "subscriptionId": s, "removed": r }))
            .collect();
        Ok(vec![message(
            "response",
            json!({ "to": "unsubscribe", "success": true, "subscriptions": out }),
        )])
    }
}

/// A subscription's queries (each the JSON text the SDKs send, or the object itself).
fn parse_filters(queries: &[Json]) -> Result<Vec<Filter>, Refusal> {
    if queries.len() > MAX_QUERIES {
        return Err(invalid(format!(
            "items: a subscription carries at most {MAX_QUERIES} queries."
        )));
    }
    queries
        .iter()
        .map(|q| {
            let text = match q {
                Json::String(s) => s.clone(),
                q => q.to_string(),
            };
            if text.len() > MAX_QUERY_LEN {
                return Err(invalid(format!(
                    "Invalid query: a query is at most {MAX_QUERY_LEN} characters."
                )));
            }
            filter::parse(&text).map_err(invalid)
        })
        .collect()
}

/// The channels as the server reports them: `account` for a signed-in user is also
/// `account.<id>`.
fn shown_channels(channels: &[String], user: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for c in channels {
        out.push(c.clone());
        if let (Some(u), "account") = (user, c.as_str()) {
            out.push(format!("account.{u}"));
        }
    }
    out
}
