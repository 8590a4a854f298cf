//! Live sessions: what the `sessionEvents` subscription streams.
//!
//! One [`LiveHub`] per gateway keeps one poller per (account, region)
//! source that has subscribers. A poller reads that source's whole Active
//! list once per interval (`max(cache.active_ttl_secs,
//! live.min_poll_interval_ms)`) through the source's reader, i.e. through
//! the page cache, so HTTP readers of the same pages share those calls. It
//! diffs the list with the previous one and broadcasts the changes; every
//! subscriber picks the events its filter matches. So:
//!
//! - **Cost is independent of the number of subscribers**: a hundred
//!   subscribers of one source cost what one does.
//! - A poller starts with its first subscriber and stops at its next tick
//!   after its last one leaves (the check and a new subscriber's joining
//!   happen under one lock, so none is left without a poller).
//! - `STARTED`: a session appears in the Active list; `CHANGED`: its status
//!   changes; `ENDED`: it leaves the list (its session is the last one
//!   seen: no extra call). A subscriber sees an event when its filter
//!   matches the session before or after the change, so it also learns
//!   that a session left its view.
//! - A failing source is reported once when it starts failing (and to each
//!   subscriber that joins while it fails); the stream carries on, and the
//!   first good read after it is diffed with the last good one.
//! - [`LiveHub::poke`] makes a source's poller read at once (after a
//!   `terminateSession`), instead of at its next tick.
//!
//! With `[redis]`, one replica polls each source for all of them: the
//! poller that holds the source's lease in Redis (taken with `SET NX PX`,
//! renewed every tick, for three intervals; a poller that stops gives it
//! up, and a dead replica's expires) reads SSM and publishes each read (a
//! versioned snapshot, or the failure's kind) on the source's channel and
//! under a key. The pollers of other replicas read no SSM: they apply the
//! snapshots their replica's one subscriber connection receives (or, when
//! one was missed, the key), newer ones only, and diff them as their own
//! reads, so their subscribers see the same events. Invalidations after a
//! `terminateSession` on any replica arrive on the same connection: the
//! replica drops that source's first-level pages and pokes its poller.
//! When Redis is unavailable, every replica polls for itself.
//!
//! Locks here are std mutexes: nothing awaits while one is held.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use futures_util::stream;
use tokio::sync::{Notify, broadcast};

use serde::{Deserialize, Serialize};

use crate::accounts::{Account, AccountRegistry, Source};
use crate::cache::INVALIDATE;
use crate::error::ApiError;
use crate::model::{AccountId, Region, Session, SessionFilter, SessionId, SessionState, SourceKey};
use crate::shared::{Message, Shared, decode, encode, now_ms};
use crate::upstream::{PageRequest, UpstreamError, UpstreamErrorKind};

/// Version of a published snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// Channel and key kind of published snapshots.
const LIVE: &str = "live";

/// Pages of one Active list a poller follows before giving up on a read.
const MAX_PAGES_PER_POLL: usize = 50;
/// Batches a slow subscriber may fall behind before it misses some.
const BROADCAST_CAPACITY: usize = 64;

/// What happened to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Changed,
    Ended,
}

/// One event, as a subscriber receives it.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub kind: EventKind,
    /// The session after the change (for `Ended`: the last snapshot seen).
    pub session: Session,
    pub account: Arc<Account>,
    pub region: Region,
    /// When the poll that saw it ended.
    pub at: DateTime<Utc>,
}

/// What a subscription stream carries.
#[derive(Clone, Debug)]
pub enum LiveItem {
    /// Boxed: an event is much larger than a failure.
    Event(Box<LiveEvent>),
    /// A source could not be read; its events resume when it can.
    SourceFailed {
        source: SourceKey,
        error: UpstreamError,
    },
}

/// One change seen by a poller: the session before (none when it started)
/// and after (for `Ended`, the last one seen).
#[derive(Clone, Debug)]
struct Change {
    kind: EventKind,
    before: Option<Session>,
    after: Session,
}

/// What a poller broadcasts after each read.
#[derive(Debug)]
enum Batch {
    Read {
        /// The first successful read of this poller: the baseline.
        first: bool,
        snapshot: Arc<Vec<Session>>,
        changes: Vec<Change>,
        at: DateTime<Utc>,
    },
    Failed(UpstreamError),
}

#[derive(Default)]
struct PollerState {
    snapshot: Option<Arc<Vec<Session>>>,
    failing: Option<UpstreamError>,
    /// The newest published read applied (followers).
    seq: u64,
}

/// One read as published to the other replicas.
#[derive(Serialize, Deserialize)]
struct Published<S> {
    /// When it was read (ms since the epoch): followers apply newer ones only.
    seq: u64,
    /// The sessions, or the failure's kind.
    read: Result<S, u8>,
}

/// What a follower applies: a published read.
type Received = (u64, Result<Vec<Session>, UpstreamError>);

struct Poller {
    source: Source,
    tx: broadcast::Sender<Arc<Batch>>,
    /// Written by the poller after each read, read by joining subscribers;
    /// the broadcast is sent under it, so a subscriber never misses or
    /// doubles a batch between its snapshot and its first event.
    state: Mutex<PollerState>,
    poke: Notify,
    /// The newest snapshot received over pub/sub, not yet applied.
    received: Mutex<Option<Received>>,
}

impl Poller {
    fn state(&self) -> std::sync::MutexGuard<'_, PollerState> {
        // Only whole values are written under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Pollers = Arc<Mutex<HashMap<SourceKey, Arc<Poller>>>>;

/// A new subscriber's receiver, with the poller's snapshot and failure as
/// of the moment it subscribed.
type Joined = (
    broadcast::Receiver<Arc<Batch>>,
    Option<Arc<Vec<Session>>>,
    Option<UpstreamError>,
);

/// Pollers per source, shared by every subscription of one gateway.
pub struct LiveHub {
    registry: Arc<AccountRegistry>,
    interval: Duration,
    page_size: u8,
    pollers: Pollers,
    shared: Option<Shared>,
}

impl LiveHub {
    /// A hub polling each source every `interval`, in pages of `page_size`
    /// (the `sessions` query's default, so both share cached pages).
    /// With `[redis]` (the registry's shared store), it also listens to
    /// its replica's subscriber connection.
    pub fn new(registry: Arc<AccountRegistry>, interval: Duration, page_size: u8) -> Self {
        let shared = registry.shared().cloned();
        let pollers: Pollers = Arc::default();
        if let Some(shared) = &shared {
            tokio::spawn(listen(
                shared.clone(),
                Arc::downgrade(&registry),
                Arc::downgrade(&pollers),
            ));
        }
        Self {
            registry,
            interval,
            page_size,
            pollers,
            shared,
        }
    }

    /// Sources being polled now.
    pub fn polling(&self) -> usize {
        lock(&self.pollers).len()
    }

    /// Makes the poller of `key`, if any, read at once.
    pub fn poke(&self, key: &SourceKey) {
        if let Some(poller) = lock(&self.pollers).get(key) {
            poller.poke.notify_one();
        }
    }

    /// The events of the sources `accounts` and `regions` name (as the
    /// `sessions` query picks them), that `filter` matches before or after
    /// the change; with `include_existing`, first a `Started` for each
    /// matching session already active.
    pub fn subscribe(
        &self,
        accounts: Option<&[String]>,
        regions: Option<&[String]>,
        visible: &dyn Fn(&Account) -> bool,
        filter: SessionFilter,
        include_existing: bool,
    ) -> Result<impl Stream<Item = LiveItem> + Send + use<>, ApiError> {
        let sources = self.registry.select(accounts, regions, visible)?;
        let filter = Arc::new(filter);
        let streams: Vec<_> = sources
            .into_iter()
            .map(|source| self.source_stream(source, filter.clone(), include_existing))
            .collect();
        Ok(stream::select_all(streams))
    }

    fn source_stream(
        &self,
        source: Source,
        filter: Arc<SessionFilter>,
        include_existing: bool,
    ) -> std::pin::Pin<Box<dyn Stream<Item = LiveItem> + Send>> {
        let (rx, snapshot, failing) = self.join(source.clone());
        let mut queue = VecDeque::new();
        let mut wants_baseline = false;
        if include_existing {
            match &snapshot {
                Some(snapshot) => queue.extend(existing(&source, snapshot, &filter, Utc::now())),
                None => wants_baseline = true,
            }
        }
        if let Some(error) = failing {
            queue.push_back(LiveItem::SourceFailed {
                source: source.key.clone(),
                error,
            });
        }
        let state = (rx, queue, wants_baseline);
        Box::pin(stream::unfold(
            state,
            move |(mut rx, mut queue, mut wants_baseline)| {
                let source = source.clone();
                let filter = filter.clone();
                async move {
                    loop {
                        if let Some(item) = queue.pop_front() {
                            return Some((item, (rx, queue, wants_baseline)));
                        }
                        match rx.recv().await {
                            Ok(batch) => match &*batch {
                                Batch::Read {
                                    first,
                                    snapshot,
                                    changes,
                                    at,
                                } => {
                                    if *first && wants_baseline {
                                        queue.extend(existing(&source, snapshot, &filter, *at));
                                    }
                                    wants_baseline = false;
                                    queue.extend(
                                        changes
                                            .iter()
                                            .filter(|c| {
                                                filter.matches(&c.after)
                                                    || c.before
                                                        .as_ref()
                                                        .is_some_and(|b| filter.matches(b))
                                            })
                                            .map(|c| event(&source, c.kind, &c.after, *at)),
                                    );
                                }
                                Batch::Failed(error) => queue.push_back(LiveItem::SourceFailed {
                                    source: source.key.clone(),
                                    error: error.clone(),
                                }),
                            },
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                tracing::warn!(
                                    account = %source.key.account,
                                    region = %source.key.region,
                                    missed,
                                    "a subscriber fell behind and missed events"
                                );
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        ))
    }

    /// Subscribes to the poller of `source`, starting it if needed; its
    /// current snapshot and failure, taken atomically with the subscription.
    fn join(&self, source: Source) -> Joined {
        let mut pollers = lock(&self.pollers);
        let poller = pollers
            .entry(source.key.clone())
            .or_insert_with(|| {
                let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
                let poller = Arc::new(Poller {
                    source: source.clone(),
                    tx,
                    state: Mutex::default(),
                    poke: Notify::new(),
                    received: Mutex::default(),
                });
                tracing::debug!(account = %source.key.account, region = %source.key.region, "poller starts");
                tokio::spawn(run(
                    poller.clone(),
                    self.pollers.clone(),
                    self.interval,
                    self.page_size,
                    self.shared.clone(),
                ));
                poller
            })
            .clone();
        let state = poller.state();
        let rx = poller.tx.subscribe();
        (rx, state.snapshot.clone(), state.failing.clone())
    }
}

fn lock(pollers: &Pollers) -> std::sync::MutexGuard<'_, HashMap<SourceKey, Arc<Poller>>> {
    // Inserts and removes only: a panic cannot leave the map half-changed.
    pollers.lock().unwrap_or_else(PoisonError::into_inner)
}

fn event(source: &Source, kind: EventKind, session: &Session, at: DateTime<Utc>) -> LiveItem {
    LiveItem::Event(Box::new(LiveEvent {
        kind,
        session: session.clone(),
        account: source.account.clone(),
        region: source.key.region.clone(),
        at,
    }))
}

/// `Started` for each session of `snapshot` that `filter` matches.
fn existing(
    source: &Source,
    snapshot: &[Session],
    filter: &SessionFilter,
    at: DateTime<Utc>,
) -> Vec<LiveItem> {
    snapshot
        .iter()
        .filter(|s| filter.matches(s))
        .map(|s| event(source, EventKind::Started, s, at))
        .collect()
}

/// One poller: reads (or, as a follower, receives), diffs, broadcasts,
/// sleeps; stops when nobody listens.
async fn run(
    poller: Arc<Poller>,
    pollers: Pollers,
    interval: Duration,
    page_size: u8,
    shared: Option<Shared>,
) {
    let key = poller.source.key.clone();
    // Renewed every tick: three ticks missed and another replica takes over.
    let lease_ttl = interval * 3;
    let lease_key = shared.as_ref().map(|s| s.source_key(LIVE, &key, ":lease"));
    loop {
        let stopping = {
            let mut map = lock(&pollers);
            let stopping = poller.tx.receiver_count() == 0;
            if stopping && map.get(&key).is_some_and(|p| Arc::ptr_eq(p, &poller)) {
                map.remove(&key);
            }
            stopping
        };
        {
            if stopping {
                if let (Some(shared), Some(lease_key)) = (&shared, &lease_key) {
                    let _ = shared.store().release(lease_key, shared.replica()).await;
                }
                tracing::debug!(account = %key.account, region = %key.region, "poller stops");
                return;
            }
        }
        let leader = match (&shared, &lease_key) {
            (Some(shared), Some(lease_key)) => shared
                .store()
                .lease(lease_key, shared.replica(), lease_ttl)
                .await
                // Redis unavailable: poll for this replica.
                .unwrap_or(true),
            _ => true,
        };
        let read = if leader {
            let read = read_active(&poller.source, page_size).await;
            if let Some(shared) = &shared {
                publish(shared, &key, &read, lease_ttl).await;
            }
            Some(read)
        } else {
            follow(&poller, shared.as_ref(), &key).await
        };
        if let Some(read) = read {
            apply(&poller, read);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = poller.poke.notified() => {}
        }
    }
}

/// Diffs a read with the previous one and broadcasts the changes.
fn apply(poller: &Poller, read: Result<Vec<Session>, UpstreamError>) {
    let key = &poller.source.key;
    let at = Utc::now();
    let mut state = poller.state();
    match read {
        Ok(sessions) => {
            let first = state.snapshot.is_none();
            let changes = state
                .snapshot
                .as_deref()
                .map(|old| diff(old, &sessions))
                .unwrap_or_default();
            let snapshot = Arc::new(sessions);
            state.snapshot = Some(snapshot.clone());
            state.failing = None;
            if first || !changes.is_empty() {
                // No receivers is not an error: the next tick stops.
                let _ = poller.tx.send(Arc::new(Batch::Read {
                    first,
                    snapshot,
                    changes,
                    at,
                }));
            }
        }
        Err(error) => {
            tracing::warn!(account = %key.account, region = %key.region, %error, "live poll failed");
            if state.failing.is_none() {
                let _ = poller.tx.send(Arc::new(Batch::Failed(error.clone())));
            }
            state.failing = Some(error);
        }
    }
}

/// Publishes the leader's read to the other replicas: on the source's
/// channel, and under a key for those that missed the message.
async fn publish(
    shared: &Shared,
    key: &SourceKey,
    read: &Result<Vec<Session>, UpstreamError>,
    ttl: Duration,
) {
    let published = Published {
        seq: now_ms(),
        read: match read {
            Ok(sessions) => Ok(sessions.as_slice()),
            Err(e) => Err(kind_code(e.kind)),
        },
    };
    let Some(bytes) = encode(SNAPSHOT_VERSION, &published) else {
        return;
    };
    let store = shared.store();
    let channel = shared.source_key(LIVE, key, "");
    let _ = store.set(&format!("{channel}:snapshot"), &bytes, ttl).await;
    let _ = store.publish(&channel, &bytes).await;
}

/// A follower's next read: the newest snapshot received, else the stored
/// one; `None` when there is nothing newer than what it applied.
async fn follow(
    poller: &Poller,
    shared: Option<&Shared>,
    key: &SourceKey,
) -> Option<Result<Vec<Session>, UpstreamError>> {
    let received = poller
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let received = match (received, shared) {
        (Some(received), _) => Some(received),
        (None, Some(shared)) => {
            let snapshot_key = format!("{}:snapshot", shared.source_key(LIVE, key, ""));
            let values = shared.store().get_many(&[snapshot_key]).await.ok()?;
            values
                .into_iter()
                .next()
                .flatten()
                .and_then(|b| received_from(&b))
        }
        (None, None) => None,
    }?;
    let (seq, read) = received;
    let mut state = poller.state();
    if seq <= state.seq {
        return None;
    }
    state.seq = seq;
    Some(read)
}

/// A published read, decoded; `None` when it is not one.
fn received_from(bytes: &[u8]) -> Option<Received> {
    let published: Published<Vec<Session>> = decode(SNAPSHOT_VERSION, bytes)?;
    let read = published.read.map_err(|code| {
        UpstreamError::new(
            kind_from_code(code),
            anyhow::anyhow!("reported by the replica polling this source"),
        )
    });
    Some((published.seq, read))
}

fn kind_code(kind: UpstreamErrorKind) -> u8 {
    match kind {
        UpstreamErrorKind::Throttled => 1,
        UpstreamErrorKind::InvalidInput => 2,
        UpstreamErrorKind::InvalidToken => 3,
        UpstreamErrorKind::AccessDenied => 4,
        UpstreamErrorKind::Unavailable => 5,
        UpstreamErrorKind::Internal => 0,
    }
}

fn kind_from_code(code: u8) -> UpstreamErrorKind {
    match code {
        1 => UpstreamErrorKind::Throttled,
        2 => UpstreamErrorKind::InvalidInput,
        3 => UpstreamErrorKind::InvalidToken,
        4 => UpstreamErrorKind::AccessDenied,
        5 => UpstreamErrorKind::Unavailable,
        _ => UpstreamErrorKind::Internal,
    }
}

/// This replica's share of its subscriber connection: snapshots for its
/// pollers, invalidations for its page cache and pollers. Ends with the
/// hub (weak references) or the store.
async fn listen(
    shared: Shared,
    registry: Weak<AccountRegistry>,
    pollers: Weak<Mutex<HashMap<SourceKey, Arc<Poller>>>>,
) {
    let mut messages = shared.store().messages();
    loop {
        let message: Message = match messages.recv().await {
            Ok(message) => message,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                // Snapshots are also under a key; invalidations are lost
                // (their pages expire by TTL).
                tracing::warn!(missed, "this replica fell behind on redis messages");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let (Some(registry), Some(pollers)) = (registry.upgrade(), pollers.upgrade()) else {
            return;
        };
        if shared.channel_kind(&message.channel, INVALIDATE).is_some() {
            let Some(key) = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(parse_source)
            else {
                continue;
            };
            registry.invalidate_here(&key);
            if let Some(poller) = lock(&pollers).get(&key) {
                poller.poke.notify_one();
            }
        } else if let Some(rest) = shared.channel_kind(&message.channel, LIVE) {
            let Some(key) = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .and_then(parse_source)
            else {
                continue;
            };
            let Some(received) = received_from(&message.payload) else {
                continue;
            };
            if let Some(poller) = lock(&pollers).get(&key) {
                *poller
                    .received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(received);
                poller.poke.notify_one();
            }
        }
    }
}

/// `account:region` as a source key.
fn parse_source(text: &str) -> Option<SourceKey> {
    let (account, region) = text.split_once(':')?;
    Some(SourceKey {
        account: AccountId::parse(account).ok()?,
        region: Region::parse(region).ok()?,
    })
}

/// The whole Active list of one source, unfiltered, page by page.
async fn read_active(source: &Source, page_size: u8) -> Result<Vec<Session>, UpstreamError> {
    let mut sessions = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES_PER_POLL {
        let page = source
            .reader
            .describe_sessions(&PageRequest {
                state: SessionState::Active,
                filter: SessionFilter::default(),
                page_size,
                token: token.take(),
            })
            .await?;
        sessions.extend(page.sessions);
        match page.next_token {
            Some(next) => token = Some(next),
            None => return Ok(sessions),
        }
    }
    Err(UpstreamError::new(
        UpstreamErrorKind::Internal,
        anyhow::anyhow!("the Active list still had a NextToken after {MAX_PAGES_PER_POLL} pages"),
    ))
}

/// The changes from `old` to `new`, in `new`'s order, then the ended ones
/// in `old`'s.
fn diff(old: &[Session], new: &[Session]) -> Vec<Change> {
    let before: HashMap<&SessionId, &Session> = old.iter().map(|s| (&s.session_id, s)).collect();
    let after: HashMap<&SessionId, &Session> = new.iter().map(|s| (&s.session_id, s)).collect();
    let mut changes = Vec::new();
    for session in new {
        match before.get(&session.session_id) {
            None => changes.push(Change {
                kind: EventKind::Started,
                before: None,
                after: session.clone(),
            }),
            Some(old) if old.status != session.status => changes.push(Change {
                kind: EventKind::Changed,
                before: Some((*old).clone()),
                after: session.clone(),
            }),
            Some(_) => {}
        }
    }
    for session in old {
        if !after.contains_key(&session.session_id) {
            changes.push(Change {
                kind: EventKind::Ended,
                before: Some(session.clone()),
                after: session.clone(),
            });
        }
    }
    changes
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;

    fn session(id: &str, status: SessionStatus) -> Session {
        let mut s = Session::new(SessionId::parse(id).unwrap());
        s.status = Some(status);
        s
    }

    #[test]
    fn diff_names_started_changed_and_ended() {
        let old = vec![
            session("a-1", SessionStatus::Connected),
            session("b-1", SessionStatus::Connecting),
            session("c-1", SessionStatus::Connected),
        ];
        let new = vec![
            session("d-1", SessionStatus::Connecting),
            session("b-1", SessionStatus::Connected),
            session("c-1", SessionStatus::Connected),
        ];
        let changes: Vec<(EventKind, String)> = diff(&old, &new)
            .iter()
            .map(|c| (c.kind, c.after.session_id.to_string()))
            .collect();
        assert_eq!(
            changes,
            [
                (EventKind::Started, "d-1".to_owned()),
                (EventKind::Changed, "b-1".to_owned()),
                (EventKind::Ended, "a-1".to_owned())
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
