//! Each node's realtime hub. Apply hands it every entry (`Feed`, never blocking: a bounded
//! queue whose overflow is a gap the hub sees); one thread turns each change into an event
//! once, decides once per distinct role set who may receive it, and puts one message per
//! receiving connection on that connection's bounded queue. A connection whose queue is full
//! is closed with an error rather than buffered: one slow client never delays the others or
//! apply. The latest changes stay in a bounded ring, so a client that reconnects can ask for
//! what it missed (`after`).

use super::events::{self, Event, Lookup};
use super::filter::{self, Filter};
use crate::auth::Identity;
use axum::extract::ws::Utf8Bytes;
use model::auth::{self, Membership, Session, User};
use model::change::{Action, Applied, Change, Feed};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{mpsc, Notify};

/// Entries apply may hand over before the hub catches up, and about how many bytes of
/// changes; past either they are dropped (and the hub, seeing the gap, closes its
/// connections so their clients know).
const INPUT_QUEUE: usize = 4096;
const INPUT_BYTES: usize = 256 << 20;
/// Events waiting for one connection, at most (each shares its event with every other
/// receiver: a few dozen bytes of its own). A connection this far behind, or that has not
/// sent anything for `STALLED_MS` while events wait, is closed; a burst (a bulk write) is not
/// a reason to close a client that keeps reading.
const CONNECTION_QUEUE: usize = 20_000;
const STALLED_MS: i64 = 10_000;
/// The replay ring: at most this many changes, and about this many bytes of them.
pub const RING_CHANGES: usize = 10_000;
pub const RING_BYTES: usize = 32 << 20;

/// Where an event sits in the log: the entry's index, and the change's place in it. The
/// same on every node (apply is deterministic), so a client may resume on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub u64, pub u32);

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Cursor, ()> {
        let (i, n) = s.split_once('.').ok_or(())?;
        Ok(Cursor(
            i.parse().map_err(|_| ())?,
            n.parse().map_err(|_| ())?,
        ))
    }
}

/// A set of roles, shared by every connection that holds exactly it: permission decisions
/// are cached per set for each event.
#[derive(Debug)]
pub(crate) struct Roles(pub Vec<String>);

/// One subscription: channels, and queries its events must match.
#[derive(Clone, Debug)]
pub(crate) struct Sub {
    pub channels: Vec<String>,
    pub filters: Vec<Filter>,
    /// The length of its channels' and queries' text (a connection holds a bounded amount).
    pub weight: usize,
}

/// How the hub tells a connection's task to close: why (the error it is sent), and a wake-up.
#[derive(Default)]
pub(crate) struct Closing {
    pub why: OnceLock<(u16, String)>,
    pub wake: Notify,
}

impl Closing {
    /// The code and message of the error to close with.
    pub(crate) fn reason(&self) -> (u16, String) {
        self.why
            .get()
            .cloned()
            .unwrap_or((1011, "The server closed the connection.".into()))
    }
}

/// An event for one connection: the event, and the ids of its subscriptions that take it
/// (a JSON array).
pub(crate) struct Outgoing(Arc<Built>, String);

impl Outgoing {
    pub(crate) fn text(&self) -> Utf8Bytes {
        self.0.message(&self.1)
    }
}

/// How far a connection's task is with its queue: events waiting, and when it last sent one.
#[derive(Default)]
pub(crate) struct Progress {
    pub queued: AtomicUsize,
    pub sent_at: AtomicI64,
}

impl Progress {
    /// One event went out.
    pub(crate) fn sent(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.sent_at
            .store(crate::params::now_ms(), Ordering::Relaxed);
    }
}

/// What a connection's task holds of its registration.
pub(crate) struct Registration {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<Outgoing>,
    pub progress: Arc<Progress>,
    pub closing: Arc<Closing>,
}

/// The identity was read before changes the hub no longer keeps: read it again.
pub(crate) struct Stale;

struct Conn {
    project: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    progress: Arc<Progress>,
    closing: Arc<Closing>,
    ident: Option<Identity>,
    roles: Arc<Roles>,
    subs: BTreeMap<String, Sub>,
    /// Events up to here were already seen by the client (it resumed after them on a node
    /// that was ahead of this one).
    seen: Option<Cursor>,
}

/// A change kept for replay, with its event once made.
struct Slot {
    cursor: Cursor,
    change: Arc<Change>,
    event: Option<Option<Arc<Built>>>,
    weight: usize,
}

/// An event ready to send: the message up to its subscription ids.
pub(crate) struct Built {
    event: Event,
    head: String,
}

impl Built {
    /// The message, with `ids` (a JSON array of subscription ids).
    fn message(&self, ids: &str) -> Utf8Bytes {
        let mut m = String::with_capacity(self.head.len() + ids.len() + 2);
        m.push_str(&self.head);
        m.push_str(ids);
        m.push_str("}}");
        Utf8Bytes::from(m)
    }
}

struct State {
    conns: HashMap<u64, Conn>,
    by_project: HashMap<String, HashSet<u64>>,
    /// `project\nuser` → that user's connections.
    by_user: HashMap<String, HashSet<u64>>,
    /// `project\nchannel` → the connections subscribed to it, with how many of their
    /// subscriptions name it.
    channels: HashMap<String, HashMap<u64, u32>>,
    role_sets: HashMap<Vec<String>, Arc<Roles>>,
    guest: Arc<Roles>,
    ring: VecDeque<Slot>,
    ring_bytes: usize,
    /// Every change after this cursor is in the ring (or not yet applied here).
    floor: Cursor,
    /// The last entry the hub has taken in.
    last: Option<u64>,
}

enum Input {
    Applied(Applied, usize),
    Skipped(u64),
    /// Answered once every input before it has been delivered (`Hub::ping`).
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// Sync access to this node's applied state, for what payloads show beyond a change.
pub trait LocalState: Send + Sync {
    fn team_name(&self, project: &str, team: &str) -> String;
    /// Who may read a collection's documents now (none: it is gone).
    fn read_rules(&self, project: &str, database: &str, collection: &str) -> Option<ReadRules>;
}

/// A collection's read rules as they stand: whether it and its database are enabled, its
/// permissions, and whether its documents carry their own.
pub struct ReadRules {
    pub enabled: bool,
    pub permissions: Vec<String>,
    pub document_security: bool,
}

struct NoState;
impl LocalState for NoState {
    fn team_name(&self, _: &str, _: &str) -> String {
        String::new()
    }
    fn read_rules(&self, _: &str, _: &str, _: &str) -> Option<ReadRules> {
        None
    }
}

struct Looked<'a>(&'a dyn LocalState);
impl Lookup for Looked<'_> {
    fn team_name(&self, project: &str, team: &str) -> String {
        self.0.team_name(project, team)
    }
}

pub struct Hub {
    state: Mutex<State>,
    input: SyncSender<Input>,
    input_bytes: AtomicUsize,
    lookup: OnceLock<Arc<dyn LocalState>>,
    next_id: AtomicU64,
}

/// The answer to a resume: the events missed (already addressed to the connection), or why
/// they cannot be had.
pub(crate) enum Resumed {
    Replayed(Vec<Utf8Bytes>),
    /// Kept: the events after this cursor (none: nothing since the node started).
    TooOld {
        kept_after: Option<Cursor>,
    },
}

fn key(project: &str, rest: &str) -> String {
    format!("{project}\n{rest}")
}

/// About how much memory a change holds.
fn weight(c: &Change) -> usize {
    fn value(v: &model::Value) -> usize {
        match v {
            model::Value::Str(s) => s.len() + 24,
            model::Value::Array(a) => a.iter().map(value).sum::<usize>() + 24,
            _ => 16,
        }
    }
    let doc = |d: &Option<model::Document>| {
        d.as_ref().map_or(0, |d| {
            d.id.len()
                + d.permissions.iter().map(|p| p.len() + 24).sum::<usize>()
                + d.data
                    .iter()
                    .map(|(k, v)| k.len() + value(v) + 32)
                    .sum::<usize>()
                + 96
        })
    };
    256 + doc(&c.old) + doc(&c.new)
}

/// Changes that never make an event (audit logs, tokens used up) are not kept for replay.
fn eventful(c: &Change) -> bool {
    if c.database == model::storage::DB {
        return super::events::file_action(c).is_some();
    }
    c.database != auth::DB
        || match c.collection.as_str() {
            auth::LOGS | model::audit::AUDIT => false,
            auth::TOKENS => c.action == Action::Create,
            _ => true,
        }
}

/// The user a change of the auth database concerns, if it changes what their connections
/// hold (their user, sessions and memberships).
fn concerned_user(c: &Change) -> Option<String> {
    if c.database != auth::DB {
        return None;
    }
    let doc = c.document();
    match c.collection.as_str() {
        auth::USERS => Some(doc.id.clone()),
        auth::SESSIONS | auth::MEMBERSHIPS => doc
            .data
            .get("userId")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl Hub {
    /// A hub and the thread that runs it.
    pub fn start() -> Arc<Hub> {
        let (tx, rx) = sync_channel(INPUT_QUEUE);
        let guest = Arc::new(Roles(auth::roles(None, &[])));
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                conns: HashMap::new(),
                by_project: HashMap::new(),
                by_user: HashMap::new(),
                channels: HashMap::new(),
                role_sets: HashMap::from([(guest.0.clone(), guest.clone())]),
                guest,
                ring: VecDeque::new(),
                ring_bytes: 0,
                // Nothing can be resumed before the first entry arrives.
                floor: Cursor(u64::MAX, u32::MAX),
                last: None,
            }),
            input: tx,
            input_bytes: AtomicUsize::new(0),
            lookup: OnceLock::new(),
            next_id: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("realtime-hub".into())
            .spawn(move || run(weak, rx))
            .expect("spawning the realtime hub thread");
        hub
    }

    /// Gives the hub the node's state, for payloads that show more than a change holds.
    pub fn attach(&self, state: Arc<dyn LocalState>) {
        let _ = self.lookup.set(state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self) -> &dyn LocalState {
        match self.lookup.get() {
            Some(l) => &**l,
            None => &NoState,
        }
    }

    /// Registers a connection (no subscriptions yet) as `ident`, brought up to date with what
    /// the hub has taken in since it was read.
    pub(crate) fn connect(
        &self,
        project: &str,
        ident: Option<Identity>,
    ) -> Result<Registration, Stale> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::unbounded_channel();
        let closing: Arc<Closing> = Arc::default();
        let progress: Arc<Progress> = Arc::default();
        let mut st = self.lock();
        let guest = st.guest.clone();
        st.conns.insert(
            id,
            Conn {
                project: project.to_string(),
                tx,
                progress: progress.clone(),
                closing: closing.clone(),
                ident: None,
                roles: guest,
                subs: BTreeMap::new(),
                seen: None,
            },
        );
        st.by_project
            .entry(project.to_string())
            .or_default()
            .insert(id);
        if let Err(stale) = st.become_(id, ident) {
            st.remove(id);
            return Err(stale);
        }
        Ok(Registration {
            id,
            events,
            progress,
            closing,
        })
    }

    pub(crate) fn disconnect(&self, id: u64) {
        self.lock().remove(id);
    }

    /// The connection's user now (after sign-out or expiry, none).
    pub(crate) fn identity(&self, id: u64) -> Option<Identity> {
        let st = self.lock();
        st.conns.get(&id).and_then(|c| c.ident.clone())
    }

    /// Makes the connection `ident` (as `connect` does).
    pub(crate) fn set_identity(&self, id: u64, ident: Option<Identity>) -> Result<(), Stale> {
        self.lock().become_(id, ident)
    }

    /// What the connection would hold with `subs` added or replacing its own of the same
    /// ids: how many subscriptions, and how much text.
    pub(crate) fn would_hold(&self, id: u64, subs: &[(String, Sub)]) -> (usize, usize) {
        let st = self.lock();
        let Some(c) = st.conns.get(&id) else {
            return (0, 0);
        };
        let mut held: HashMap<&str, usize> =
            c.subs.iter().map(|(k, s)| (k.as_str(), s.weight)).collect();
        for (sid, sub) in subs {
            held.insert(sid, sub.weight);
        }
        (held.len(), held.values().sum())
    }

    /// Adds or replaces subscriptions; with `after`, also answers what the connection missed
    /// since that cursor, in order, before any later event can reach its queue. (Under the
    /// hub's lock: a resume with a long replay is for a thread that may block.)
    pub(crate) fn subscribe(
        &self,
        id: u64,
        subs: Vec<(String, Sub)>,
        after: Option<Cursor>,
    ) -> Option<Resumed> {
        let mut st = self.lock();
        let project = st.conns.get(&id).map(|c| c.project.clone())?;
        for (sid, sub) in subs {
            st.unsubscribe_one(id, &project, &sid);
            for ch in &sub.channels {
                *st.channels
                    .entry(key(&project, ch))
                    .or_default()
                    .entry(id)
                    .or_default() += 1;
            }
            if let Some(c) = st.conns.get_mut(&id) {
                c.subs.insert(sid, sub);
            }
        }
        let after = after?;
        if after < st.floor {
            return Some(Resumed::TooOld {
                kept_after: (st.floor.0 != u64::MAX).then_some(st.floor),
            });
        }
        let expired = st.conns.get(&id).is_some_and(|c| {
            c.ident
                .as_ref()
                .is_some_and(|i| i.expire <= crate::params::now_ms())
        });
        if expired {
            st.set_ident(id, None);
        }
        let lookup = self.lookup();
        let mut out = Vec::new();
        let st = &mut *st;
        // A replayed row is delivered only if its reader may read it by the rules of then and
        // by the rules of now (a table disabled or a permission removed since stops it).
        let mut rules: HashMap<(String, String), Option<ReadRules>> = HashMap::new();
        let guest = st.guest.clone();
        let roles = st.conns.get(&id).map_or(guest, |c| c.roles.clone());
        for slot in st.ring.iter_mut() {
            if slot.cursor <= after || slot.change.project != project {
                continue;
            }
            let c = &slot.change;
            if c.database != auth::DB {
                let now = rules
                    .entry((c.database.clone(), c.collection.clone()))
                    .or_insert_with(|| lookup.read_rules(&project, &c.database, &c.collection));
                let may = now.as_ref().is_some_and(|r| {
                    r.enabled
                        && (model::permission::allows(&r.permissions, "read", &roles.0)
                            || (r.document_security
                                && model::permission::allows(
                                    &c.document().permissions,
                                    "read",
                                    &roles.0,
                                )))
                });
                if !may {
                    continue;
                }
            }
            let fresh = slot.event.is_none();
            let Some(built) = slot.built(lookup) else {
                continue;
            };
            if fresh {
                slot.weight += built.head.len();
                st.ring_bytes += built.head.len();
            }
            if let Some(m) = st
                .conns
                .get(&id)
                .and_then(|c| c.message_for(&built, &mut None))
            {
                out.push(m.text());
            }
        }
        if let Some(c) = st.conns.get_mut(&id) {
            c.seen = Some(after);
        }
        Some(Resumed::Replayed(out))
    }

    /// Removes subscriptions; answers, for each id, whether it was there.
    pub(crate) fn unsubscribe(&self, id: u64, sids: &[String]) -> Vec<bool> {
        let mut st = self.lock();
        let Some(project) = st.conns.get(&id).map(|c| c.project.clone()) else {
            return vec![false; sids.len()];
        };
        sids.iter()
            .map(|s| st.unsubscribe_one(id, &project, s))
            .collect()
    }

    /// Sends a ping through the queue applied entries take to the hub's thread and waits
    /// until the thread has taken it (`GET /v1/health/pubsub`): whether events flow, and
    /// how long one waits behind the entries queued before it.
    pub async fn ping(&self, within: std::time::Duration) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.input.try_send(Input::Ping(tx)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return Err("the queue of applied entries is full".into())
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err("the hub's thread has stopped".into())
            }
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the hub's thread has stopped".into()),
            Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
        }
    }

    /// Connections served now.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    fn take(&self, input: Input) {
        let applied = {
            let mut st = self.lock();
            match input {
                Input::Skipped(index) => {
                    st.gap(index, "This node skipped ahead to a snapshot of the state; events before it were not delivered. Reconnect to continue.");
                    return;
                }
                Input::Ping(answer) => {
                    let _ = answer.send(());
                    return;
                }
                Input::Applied(applied, bytes) => {
                    self.input_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    if st.last.is_some_and(|l| applied.index != l + 1) {
                        st.gap(
                            applied.index.saturating_sub(1),
                            "Events were dropped because this node fell behind. Reconnect to continue.",
                        );
                    }
                    if st.last.is_none() {
                        st.floor = Cursor(applied.index.saturating_sub(1), u32::MAX);
                    }
                    st.last = Some(applied.index);
                    applied
                }
            }
        };
        self.deliver_entry(applied);
    }

    /// Delivers an entry's changes envelope by envelope: the roles an envelope grants or
    /// revokes hold for its own events (a team's creator hears of the team, a member removed
    /// does not hear of the removal), while a session that ended, or a user deleted or
    /// blocked, still hears of it. A team deleted takes its members' roles after its own
    /// event, and the memberships it deletes make none (as Appwrite, which deletes them
    /// later, silently). The lock is taken per step, not for the whole entry: events are made
    /// outside it, and connections wait for one change at most.
    fn deliver_entry(&self, applied: Applied) {
        let lookup = self.lookup();
        let index = applied.index;
        let mut n: u32 = 0;
        for envelope in applied.envelopes {
            let changes: Vec<Arc<Change>> = envelope.into_iter().map(Arc::new).collect();
            let gone_teams: HashSet<&str> = changes
                .iter()
                .filter(|c| {
                    c.database == auth::DB
                        && c.collection == auth::TEAMS
                        && c.action == Action::Delete
                })
                .map(|c| c.id())
                .collect();
            let with_team = |c: &Change| {
                c.database == auth::DB
                    && c.collection == auth::MEMBERSHIPS
                    && c.new.is_none()
                    && c.document()
                        .data
                        .get("teamId")
                        .and_then(|v| v.as_str())
                        .is_some_and(|t| gone_teams.contains(t))
            };
            {
                let mut st = self.lock();
                for c in changes.iter().filter(|c| !with_team(c)) {
                    st.refresh_roles(c, false, None, index);
                }
            }
            for change in &changes {
                let cursor = Cursor(index, n);
                n = n.saturating_add(1);
                if !eventful(change) || with_team(change) {
                    continue;
                }
                let mut slot = Slot {
                    cursor,
                    change: change.clone(),
                    event: None,
                    weight: weight(change),
                };
                let wanted = self.lock().by_project.contains_key(&change.project);
                let built = match wanted {
                    true => slot.built(lookup),
                    false => None,
                };
                let mut st = self.lock();
                if let Some(built) = built {
                    slot.weight += built.head.len();
                    st.deliver(&built, cursor);
                }
                st.ring_bytes += slot.weight;
                st.ring.push_back(slot);
                while st.ring.len() > RING_CHANGES
                    || (st.ring_bytes > RING_BYTES && st.ring.len() > 1)
                {
                    if let Some(old) = st.ring.pop_front() {
                        st.ring_bytes = st.ring_bytes.saturating_sub(old.weight);
                        st.floor = old.cursor;
                    }
                }
            }
            let mut st = self.lock();
            for c in &changes {
                if with_team(c) {
                    st.refresh_roles(c, false, None, index);
                }
                st.refresh_roles(c, true, None, index);
            }
        }
    }
}

impl Slot {
    fn built(&mut self, lookup: &dyn LocalState) -> Option<Arc<Built>> {
        if self.event.is_none() {
            let built = events::event(&self.change, &Looked(lookup)).map(|event| {
                let head = format!(
                    "{{\"type\":\"event\",\"data\":{{\"events\":{},\"channels\":{},\"timestamp\":{},\"payload\":{},\"cursor\":\"{}\",\"subscriptions\":",
                    Json::from(event.events.clone()),
                    Json::from(event.channels.clone()),
                    Json::from(event.timestamp.clone()),
                    event.payload,
                    self.cursor
                );
                Arc::new(Built { event, head })
            });
            self.event = Some(built);
        }
        self.event.clone().flatten()
    }
}

impl Conn {
    /// The message for `built` if this connection may and wants to receive it; `decided`
    /// caches the permission decision of its role set.
    fn message_for(
        &self,
        built: &Arc<Built>,
        decided: &mut Option<&mut HashMap<usize, bool>>,
    ) -> Option<Outgoing> {
        let ev = &built.event;
        if ev.project != self.project {
            return None;
        }
        let allowed = match decided {
            Some(cache) => *cache
                .entry(Arc::as_ptr(&self.roles) as usize)
                .or_insert_with(|| ev.access.allows(&self.roles.0)),
            None => ev.access.allows(&self.roles.0),
        };
        if !allowed {
            return None;
        }
        let ids: Vec<&str> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.channels.iter().any(|c| ev.channels.contains(c))
                    && filter::matches_all(&s.filters, &ev.payload)
            })
            .map(|(id, _)| id.as_str())
            .collect();
        (!ids.is_empty()).then(|| {
            let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
            Outgoing(built.clone(), ids)
        })
    }
}

impl State {
    fn roles_of(&mut self, ident: Option<&Identity>) -> Arc<Roles> {
        let Some(ident) = ident else {
            return self.guest.clone();
        };
        let mut roles = ident.roles();
        roles.sort();
        if self.role_sets.len() > 4 * self.conns.len() + 64 {
            // Sets no connection holds any more.
            self.role_sets.retain(|_, r| Arc::strong_count(r) > 1);
        }
        self.role_sets
            .entry(roles.clone())
            .or_insert_with(|| Arc::new(Roles(roles)))
            .clone()
    }

    /// Makes connection `id` `ident` (`None`: a guest), with the roles that go with it, and
    /// keeps the index of connections by user in step.
    fn set_ident(&mut self, id: u64, ident: Option<Identity>) {
        let roles = self.roles_of(ident.as_ref());
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let project = conn.project.clone();
        let before = conn.ident.as_ref().map(|i| i.user.id.clone());
        let after = ident.as_ref().map(|i| i.user.id.clone());
        conn.ident = ident;
        conn.roles = roles;
        if before != after {
            if let Some(u) = before {
                let k = key(&project, &u);
                if let Some(set) = self.by_user.get_mut(&k) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_user.remove(&k);
                    }
                }
            }
            if let Some(u) = after {
                self.by_user
                    .entry(key(&project, &u))
                    .or_default()
                    .insert(id);
            }
        }
    }

    /// `set_ident`, first bringing `ident` up to date with the changes taken in since it was
    /// read (all of them kept, or `Stale`).
    fn become_(&mut self, id: u64, ident: Option<Identity>) -> Result<(), Stale> {
        let Some(ident) = ident else {
            self.set_ident(id, None);
            return Ok(());
        };
        let at = ident.at;
        let behind = self.last.is_some_and(|l| l > at);
        if behind && self.floor.0 > at {
            return Err(Stale);
        }
        self.set_ident(id, Some(ident));
        if behind {
            let later: Vec<(u64, Arc<Change>)> = self
                .ring
                .iter()
                .filter(|s| s.cursor.0 > at)
                .map(|s| (s.cursor.0, s.change.clone()))
                .collect();
            for (index, c) in &later {
                self.refresh_roles(c, false, Some(id), *index);
                self.refresh_roles(c, true, Some(id), *index);
            }
        }
        Ok(())
    }

    fn unsubscribe_one(&mut self, id: u64, project: &str, sid: &str) -> bool {
        let Some(old) = self.conns.get_mut(&id).and_then(|c| c.subs.remove(sid)) else {
            return false;
        };
        for ch in &old.channels {
            let k = key(project, ch);
            if let Some(m) = self.channels.get_mut(&k) {
                if let Some(n) = m.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&id);
                    }
                }
                if m.is_empty() {
                    self.channels.remove(&k);
                }
            }
        }
        true
    }

    fn remove(&mut self, id: u64) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        let project = c.project.clone();
        let sids: Vec<String> = c.subs.keys().cloned().collect();
        for s in sids {
            self.unsubscribe_one(id, &project, &s);
        }
        self.set_ident(id, None);
        self.conns.remove(&id);
        if let Some(set) = self.by_project.get_mut(&project) {
            set.remove(&id);
            if set.is_empty() {
                self.by_project.remove(&project);
            }
        }
    }

    /// Closes a connection with an error: its task is woken to send the error and close, and
    /// its queue is dropped.
    fn evict(&mut self, id: u64, code: u16, message: &str) {
        if let Some(c) = self.conns.get(&id) {
            let _ = c.closing.why.set((code, message.to_string()));
            c.closing.wake.notify_one();
        }
        self.remove(id);
    }

    /// Events up to `index` were not delivered: every connection is closed (its client
    /// reconnects, and learns nothing was silently skipped), and the ring starts again.
    fn gap(&mut self, index: u64, why: &str) {
        tracing::warn!(index, "realtime: events skipped; closing subscribers");
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.evict(id, 1013, why);
        }
        self.ring.clear();
        self.ring_bytes = 0;
        self.floor = Cursor(index, u32::MAX);
        self.last = Some(index);
    }

    fn deliver(&mut self, built: &Arc<Built>, cursor: Cursor) {
        let ev = &built.event;
        let mut candidates: Vec<u64> = Vec::new();
        for ch in &ev.channels {
            if let Some(m) = self.channels.get(&key(&ev.project, ch)) {
                candidates.extend(m.keys());
            }
        }
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable();
        candidates.dedup();
        // A session (or JWT) that ended leaves its connection a guest, from this event on.
        let now = crate::params::now_ms();
        let expired: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|id| {
                self.conns
                    .get(id)
                    .and_then(|c| c.ident.as_ref())
                    .is_some_and(|i| i.expire <= now)
            })
            .collect();
        for id in expired {
            self.set_ident(id, None);
        }
        let mut decided: HashMap<usize, bool> = HashMap::new();
        let mut slow = Vec::new();
        for id in candidates {
            let Some(conn) = self.conns.get(&id) else {
                continue;
            };
            if conn.seen.is_some_and(|s| cursor <= s) {
                continue;
            }
            let Some(msg) = conn.message_for(built, &mut Some(&mut decided)) else {
                continue;
            };
            // The clock runs from the later of the last event sent and the queue filling.
            let waiting = conn.progress.queued.fetch_add(1, Ordering::Relaxed);
            if waiting == 0 {
                conn.progress.sent_at.store(now, Ordering::Relaxed);
            }
            let stalled =
                waiting > 0 && now - conn.progress.sent_at.load(Ordering::Relaxed) > STALLED_MS;
            if waiting >= CONNECTION_QUEUE || stalled || conn.tx.send(msg).is_err() {
                slow.push(id);
            }
        }
        for id in slow {
            self.evict(
                id,
                1013,
                "The connection fell too far behind its events and was closed. Reconnect to continue.",
            );
        }
    }

    /// Applies what a change does to the roles of its user's connections (all of them, or
    /// `only` one): memberships, user updates and session updates before its events
    /// (`after == false`); ended sessions and deleted or blocked users after.
    fn refresh_roles(&mut self, c: &Change, after: bool, only: Option<u64>, index: u64) {
        let Some(user) = concerned_user(c) else {
            return;
        };
        let Some(ids) = self.by_user.get(&key(&c.project, &user)) else {
            return;
        };
        let ids: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        let doc = c.document();
        for id in ids {
            let Some(mut ident) = self.conns.get(&id).and_then(|c| c.ident.clone()) else {
                continue;
            };
            if ident.at >= index {
                // Read from a view that already had this change.
                continue;
            }
            let keep = match (c.collection.as_str(), after) {
                (auth::MEMBERSHIPS, false) => {
                    ident.teams.retain(|t| t.membership != doc.id);
                    if let Some(tr) = c
                        .new
                        .as_ref()
                        .and_then(|d| Membership::from_document(d).team_roles())
                    {
                        ident.teams.push(tr);
                    }
                    true
                }
                (auth::USERS, false) => match &c.new {
                    Some(new) => {
                        let user = User::from_document(new);
                        if user.status {
                            ident.user = user;
                        }
                        // A session short of the factors the user now needs is signed out.
                        ident.jwt || ident.factors >= ident.user.factors_required()
                    }
                    None => true,
                },
                (auth::USERS, true) => c
                    .new
                    .as_ref()
                    .is_some_and(|new| User::from_document(new).status),
                (auth::SESSIONS, false) => {
                    if let (Some(new), true) = (&c.new, ident.session == doc.id) {
                        let s = Session::from_document(new);
                        ident.expire = s.expire.min(ident.cap);
                        ident.factors = s.factors.len();
                    }
                    true
                }
                (auth::SESSIONS, true) => !(c.action == Action::Delete && ident.session == doc.id),
                _ => continue,
            };
            self.set_ident(id, keep.then_some(ident));
        }
    }
}

fn run(hub: std::sync::Weak<Hub>, rx: Receiver<Input>) {
    while let Ok(input) = rx.recv() {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hub.take(input)));
        if taken.is_err() {
            // A bug, not a state to carry on from silently: every subscriber is told.
            tracing::error!("realtime: the hub failed on an entry; closing subscribers");
            let mut st = hub.lock();
            let last = st.last.unwrap_or(0);
            st.gap(
                last,
                "The server failed to deliver events. Reconnect to continue.",
            );
        }
    }
}

impl Feed for Hub {
    fn applied(&self, applied: Applied) {
        // Past the queue's bounds the entry is dropped; the hub sees the gap in the indexes.
        let bytes: usize = applied.envelopes.iter().flatten().map(weight).sum();
        if self.input_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > INPUT_BYTES {
            self.input_bytes.fetch_sub(bytes, Ordering::Relaxed);
            tracing::debug!("realtime: hub input full");
            return;
        }
        if self.input.try_send(Input::Applied(applied, bytes)).is_err() {
            self.input_bytes.fetch_sub(bytes, Ordering::Relaxed);
            tracing::debug!("realtime: hub queue full");
        }
    }

    fn skipped(&self, index: u64) {
        let _ = self.input.try_send(Input::Skipped(index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_order_by_entry_then_place() {
        let c: Cursor = "12.3".parse().unwrap();
        assert_eq!(c, Cursor(12, 3));
        assert_eq!(c.to_string(), "12.3");
        assert!(Cursor(12, 3) < Cursor(13, 0));
        assert!(Cursor(12, u32::MAX) < Cursor(13, 0));
        assert!("12".parse::<Cursor>().is_err());
        assert!("a.b".parse::<Cursor>().is_err());
    }
}
