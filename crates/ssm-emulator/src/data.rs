//! The emulator's data: session records and managed nodes per (account,
//! region), and a seeded generator of realistic ones.
//!
//! Invariants:
//! - Each (account, region) node list is sorted by instance id, which is
//!   unique in it (DescribeInstanceInformation pages in that order).
//! - Each (account, region) list is kept in DescribeSessions order: newest
//!   `start_date` first, ties broken by `session_id` ascending. Paging relies
//!   on this (it binary-searches the position a NextToken names).
//! - A session id appears at most once per (account, region); inserting a
//!   record with an existing id replaces the old one.
//! - These types are the emulator's own, not `crate::model`'s, on purpose:
//!   the emulator stands in for AWS, and sharing types with the client under
//!   test would let a mapping mistake on one side hide on the other.
//! - Generation is a pure function of the [`DataSpec`]: same spec, same
//!   records, on every run and machine (own PRNG and hash, nothing from std's
//!   randomised hashers).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};

/// `SessionStatus` from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Connected,
    Connecting,
    Disconnected,
    Terminated,
    Terminating,
    Failed,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 6] = [
        Self::Connected,
        Self::Connecting,
        Self::Disconnected,
        Self::Terminated,
        Self::Terminating,
        Self::Failed,
    ];

    /// The wire name, as in the model's enum.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Connecting => "Connecting",
            Self::Disconnected => "Disconnected",
            Self::Terminated => "Terminated",
            Self::Terminating => "Terminating",
            Self::Failed => "Failed",
        }
    }

    /// The status with this wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Which `State` of DescribeSessions lists a session with this status.
    pub fn state(self) -> SessionState {
        match self {
            Self::Connected | Self::Connecting | Self::Disconnected => SessionState::Active,
            Self::Terminated | Self::Terminating | Self::Failed => SessionState::History,
        }
    }
}

/// `SessionState` from the model: the two lists DescribeSessions can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Active,
    History,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::History => "History",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Active" => Some(Self::Active),
            "History" => Some(Self::History),
            _ => None,
        }
    }
}

/// `AccessType` from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessType {
    Standard,
    JustInTime,
}

impl AccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "Standard",
            Self::JustInTime => "JustInTime",
        }
    }
}

/// `SessionManagerOutputUrl`: where a session's transcript was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputUrl {
    pub s3_output_url: Option<String>,
    pub cloud_watch_output_url: Option<String>,
}

/// One session as SSM stores it; serialised as the model's `Session` shape.
/// Its `State` is derived from `status` ([`SessionStatus::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// `<user or role session name>-<17 hex digits>`, 1..=96 characters.
    pub session_id: String,
    /// Managed node id (`i-...` or `mi-...`), 1..=400 characters.
    pub target: String,
    pub status: SessionStatus,
    pub start_date: DateTime<Utc>,
    /// Set only once the session has ended (Terminated or Failed).
    pub end_date: Option<DateTime<Utc>>,
    pub document_name: String,
    /// IAM user or STS assumed-role ARN, 1..=256 characters.
    pub owner: String,
    pub reason: Option<String>,
    /// Reserved by AWS ("for future use"); the generator leaves it unset.
    pub details: Option<String>,
    pub output_url: Option<OutputUrl>,
    /// Minutes as a decimal string matching the model's pattern.
    pub max_session_duration: Option<String>,
    pub access_type: Option<AccessType>,
}

impl SessionRecord {
    pub fn state(&self) -> SessionState {
        self.status.state()
    }
}

/// `PingStatus` from the model: whether SSM Agent on a node checks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingStatus {
    Online,
    ConnectionLost,
    /// Deprecated by AWS but still in the model and still seen.
    Inactive,
}

impl PingStatus {
    pub const ALL: [PingStatus; 3] = [Self::Online, Self::ConnectionLost, Self::Inactive];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::ConnectionLost => "ConnectionLost",
            Self::Inactive => "Inactive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// `PlatformType` from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformType {
    Windows,
    Linux,
    MacOS,
}

impl PlatformType {
    pub const ALL: [PlatformType; 3] = [Self::Windows, Self::Linux, Self::MacOS];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Windows => "Windows",
            Self::Linux => "Linux",
            Self::MacOS => "MacOS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// `ResourceType` from the model: an EC2 instance (`i-`) or a hybrid managed
/// node (`mi-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    EC2Instance,
    ManagedInstance,
}

impl ResourceType {
    pub const ALL: [ResourceType; 2] = [Self::EC2Instance, Self::ManagedInstance];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EC2Instance => "EC2Instance",
            Self::ManagedInstance => "ManagedInstance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The type an instance id names: `mi-` ids are managed instances.
    pub fn of_instance_id(id: &str) -> Self {
        if id.starts_with("mi-") {
            Self::ManagedInstance
        } else {
            Self::EC2Instance
        }
    }
}

/// One managed node as SSM knows it; serialised as the model's
/// `InstanceInformation` shape (`None` members are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// `i-` + 8 or 17 word characters, or `mi-` + 17.
    pub instance_id: String,
    pub ping_status: PingStatus,
    pub last_ping_date_time: DateTime<Utc>,
    /// e.g. `3.3.1142.0`.
    pub agent_version: String,
    pub is_latest_version: bool,
    pub platform_type: PlatformType,
    /// e.g. "Amazon Linux", "Microsoft Windows Server 2022 Datacenter".
    pub platform_name: String,
    pub platform_version: String,
    pub resource_type: ResourceType,
    pub ip_address: String,
    /// The fully qualified host name.
    pub computer_name: String,
    /// Instance profile role (EC2) or service role (hybrid), at most 64 chars.
    pub iam_role: Option<String>,
    /// Hybrid nodes only: the activation they registered with (a UUID).
    pub activation_id: Option<String>,
    /// Hybrid nodes only.
    pub registration_date: Option<DateTime<Utc>>,
    /// Hybrid nodes only: the activation's default instance name.
    pub name: Option<String>,
    pub source_id: Option<String>,
    /// A `SourceType` enum value, e.g. `AWS::EC2::Instance`.
    pub source_type: Option<String>,
}

/// DescribeSessions order: newest first, then session id ascending.
pub(crate) fn session_order(a: &SessionRecord, b: &SessionRecord) -> Ordering {
    b.start_date
        .cmp(&a.start_date)
        .then_with(|| a.session_id.cmp(&b.session_id))
}

/// All sessions and managed nodes the emulator knows, per account and region.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// account id -> region -> sessions in [`session_order`].
    sources: BTreeMap<String, BTreeMap<String, Vec<SessionRecord>>>,
    /// account id -> region -> managed nodes by instance id.
    nodes: BTreeMap<String, BTreeMap<String, Vec<NodeRecord>>>,
}

impl Dataset {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions of one account and region, in DescribeSessions order (both
    /// states); empty when the emulator has none there.
    pub fn sessions(&self, account_id: &str, region: &str) -> &[SessionRecord] {
        self.sources
            .get(account_id)
            .and_then(|regions| regions.get(region))
            .map_or(&[], Vec::as_slice)
    }

    /// Inserts a session in order, replacing one with the same id.
    pub fn insert(&mut self, account_id: &str, region: &str, session: SessionRecord) {
        let list = self
            .sources
            .entry(account_id.to_owned())
            .or_default()
            .entry(region.to_owned())
            .or_default();
        list.retain(|s| s.session_id != session.session_id);
        let at = list.partition_point(|s| session_order(s, &session) == Ordering::Less);
        list.insert(at, session);
    }

    /// Managed nodes of one account and region, by instance id ascending;
    /// empty when the emulator has none there.
    pub fn nodes(&self, account_id: &str, region: &str) -> &[NodeRecord] {
        self.nodes
            .get(account_id)
            .and_then(|regions| regions.get(region))
            .map_or(&[], Vec::as_slice)
    }

    /// Inserts a managed node in order, replacing one with the same id.
    pub fn insert_node(&mut self, account_id: &str, region: &str, node: NodeRecord) {
        let list = self
            .nodes
            .entry(account_id.to_owned())
            .or_default()
            .entry(region.to_owned())
            .or_default();
        match list.binary_search_by(|n| n.instance_id.cmp(&node.instance_id)) {
            Ok(at) => list[at] = node,
            Err(at) => list.insert(at, node),
        }
    }

    /// The (account, region) pairs that hold sessions, sorted.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sources.iter().flat_map(|(account, regions)| {
            regions
                .keys()
                .map(move |region| (account.as_str(), region.as_str()))
        })
    }

    /// Total number of sessions over all sources.
    pub fn len(&self) -> usize {
        self.sources
            .values()
            .flat_map(|r| r.values())
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Generates the sessions and managed nodes a spec describes. Deterministic: the same spec
    /// gives the same dataset; each source draws from its own stream (seeded
    /// by the spec seed, account and region), so adding a source does not
    /// change the others.
    pub fn generate(spec: &DataSpec) -> Self {
        let mut dataset = Self::new();
        for source in &spec.sources {
            let seed = spec.seed
                ^ fnv1a(source.account_id.as_bytes()).rotate_left(17)
                ^ fnv1a(source.region.as_bytes());
            let mut generator = SourceGenerator::new(SplitMix64(seed), spec.anchor, source);
            let mut sessions = generator.sessions(source.history, source.active);
            sessions.sort_by(session_order);
            // Nodes draw from their own stream, so adding them left the
            // sessions of every seed unchanged.
            let nodes = generator.nodes(SplitMix64(mix64(seed ^ NODE_STREAM)), &sessions);
            for node in nodes {
                dataset.insert_node(&source.account_id, &source.region, node);
            }
            let list = dataset
                .sources
                .entry(source.account_id.clone())
                .or_default()
                .entry(source.region.clone())
                .or_default();
            // A spec naming a source twice merges both lists; `insert` keeps
            // the order and the ids unique.
            if list.is_empty() {
                *list = sessions;
            } else {
                for s in sessions {
                    dataset.insert(&source.account_id, &source.region, s);
                }
            }
        }
        dataset
    }

    /// The demo data: three accounts in two regions of different sizes; the
    /// demo account in us-east-1 is the big one.
    pub fn demo(anchor: DateTime<Utc>) -> Self {
        Self::generate(&DataSpec::demo(anchor))
    }
}

/// What [`Dataset::generate`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    pub seed: u64,
    /// "Now" for the data: History spans the 30 days before it, Active the
    /// last few hours.
    pub anchor: DateTime<Utc>,
    pub sources: Vec<SourceSpec>,
}

/// How many sessions of each state one (account, region) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub account_id: String,
    pub region: String,
    pub active: usize,
    pub history: usize,
}

impl SourceSpec {
    pub fn new(account_id: &str, region: &str, active: usize, history: usize) -> Self {
        Self {
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            active,
            history,
        }
    }
}

/// Seed of the demo dataset; fixed so demos and docs show the same sessions.
pub const DEMO_SEED: u64 = 0x5353_4d5f_4445_4d4f;

impl DataSpec {
    /// The demo layout (see [`Dataset::demo`]).
    pub fn demo(anchor: DateTime<Utc>) -> Self {
        use super::{DEMO_ACCOUNT_ID, DEMO_ACCOUNT_IDS};
        let [_, second, third] = DEMO_ACCOUNT_IDS;
        Self {
            seed: DEMO_SEED,
            anchor,
            sources: vec![
                SourceSpec::new(DEMO_ACCOUNT_ID, "us-east-1", 36, 320),
                SourceSpec::new(DEMO_ACCOUNT_ID, "eu-west-1", 7, 85),
                SourceSpec::new(second, "us-east-1", 12, 150),
                SourceSpec::new(second, "eu-west-1", 3, 24),
                SourceSpec::new(third, "us-east-1", 2, 41),
                SourceSpec::new(third, "eu-west-1", 0, 6),
            ],
        }
    }
}

/// splitmix64: tiny, well-mixed and stable forever, which is all seeded test
/// data needs (rand's StdRng may change its algorithm between releases).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform-enough in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index in `0..n` skewed towards 0, so a few targets and owners carry
    /// most sessions, as in real fleets.
    fn skewed(&mut self, n: usize) -> usize {
        let n = n as u64;
        ((self.below(n) * self.below(n)) / n.max(1)) as usize
    }

    fn hex(&mut self, digits: usize) -> String {
        let value = self.next_u64() as u128 | ((self.next_u64() as u128) << 64);
        let s = format!("{value:032x}");
        s[..digits].to_owned()
    }
}

/// splitmix64's finaliser; also used to derive page lengths in short-pages mode.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const PEOPLE: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf",
];
const BOTS: &[&str] = &["deploy-bot", "ci-runner", "backup-agent", "patch-bot"];
const ROLES: &[&str] = &[
    "Admin",
    "OnCall",
    "Developer",
    "ReadOnly",
    "DeployRole",
    "BreakGlass",
];
/// Weighted: interactive shells dominate real session logs.
const DOCUMENTS: &[&str] = &[
    "SSM-SessionManagerRunShell",
    "SSM-SessionManagerRunShell",
    "SSM-SessionManagerRunShell",
    "SSM-SessionManagerRunShell",
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSession",
    "AWS-StartSSHSession",
    "AWS-StartInteractiveCommand",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartNonInteractiveCommand",
];
const REASONS: &[&str] = &[
    "Investigating high CPU on the API fleet",
    "Deploy hotfix 1.4.2",
    "Rotate application logs",
    "INC-2291 triage: 502s from the load balancer",
    "Database failover drill",
    "Patch OpenSSL",
    "Check disk usage after alarm",
    "Port-forward to the admin console",
    "Quarterly access review",
    "Debug cron job that stopped running",
];
/// Every value matches the model's MaxSessionDuration pattern, whose 4-digit
/// branch (`1[0-4][0-3][0-9]|1440`) skips e.g. 1045: so no arbitrary values.
const MAX_DURATIONS: &[&str] = &[
    "15", "30", "60", "90", "120", "240", "480", "720", "1200", "1440",
];

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Mixed into a source's seed for its node stream.
const NODE_STREAM: u64 = 0x6e6f_6465_7321;
/// Percent of a source's session targets left unregistered (no node), so
/// lookups meet targets SSM no longer knows.
const UNREGISTERED_PERCENT: usize = 15;
/// The newest agent; nodes running it have `IsLatestVersion`.
pub(crate) const LATEST_AGENT: &str = "3.3.1142.0";
const OLDER_AGENTS: &[&str] = &["3.3.987.0", "3.2.2303.0", "3.2.1705.0", "3.1.1732.0"];
/// (name, version) pairs as SSM Agent reports them.
const LINUX: &[(&str, &str)] = &[
    ("Amazon Linux", "2023"),
    ("Amazon Linux", "2023"),
    ("Amazon Linux", "2"),
    ("Ubuntu", "22.04"),
    ("Ubuntu", "24.04"),
    ("Red Hat Enterprise Linux", "9.4"),
    ("Debian GNU/Linux", "12"),
];
const WINDOWS: &[(&str, &str)] = &[
    ("Microsoft Windows Server 2022 Datacenter", "10.0.20348"),
    ("Microsoft Windows Server 2019 Datacenter", "10.0.17763"),
    ("Microsoft Windows Server 2016 Datacenter", "10.0.14393"),
];
const MACOS: &[(&str, &str)] = &[("macOS", "14.5"), ("macOS", "13.6.7")];
const HOSTS: &[&str] = &["web", "db", "build", "bastion", "cache", "kiosk", "lab"];

struct Owner {
    arn: String,
    /// The user or role-session name, which prefixes its session ids.
    name: String,
}

struct SourceGenerator<'a> {
    rng: SplitMix64,
    anchor: DateTime<Utc>,
    source: &'a SourceSpec,
    targets: Vec<String>,
    owners: Vec<Owner>,
    ids: HashSet<String>,
    /// Start dates handed out so far, so some later sessions can share one.
    starts: Vec<DateTime<Utc>>,
}

impl<'a> SourceGenerator<'a> {
    fn new(mut rng: SplitMix64, anchor: DateTime<Utc>, source: &'a SourceSpec) -> Self {
        let pool = 20 + rng.below(41) as usize;
        // Current EC2 and managed-node ids: 17 hex digits, the first a 0.
        let targets = (0..pool)
            .map(|_| {
                let prefix = if rng.chance(1, 8) { "mi" } else { "i" };
                format!("{prefix}-0{}", rng.hex(16))
            })
            .collect();

        let account = &source.account_id;
        let mut owners = Vec::new();
        for name in PEOPLE.iter().chain(BOTS) {
            // Not everyone works in every account.
            if !rng.chance(2, 3) {
                continue;
            }
            let arn = if BOTS.contains(name) || rng.chance(1, 2) {
                let role = if BOTS.contains(name) {
                    "DeployRole"
                } else {
                    rng.pick(ROLES)
                };
                format!("arn:aws:sts::{account}:assumed-role/{role}/{name}")
            } else {
                format!("arn:aws:iam::{account}:user/{name}")
            };
            owners.push(Owner {
                arn,
                name: (*name).to_owned(),
            });
        }
        if owners.is_empty() {
            owners.push(Owner {
                arn: format!("arn:aws:iam::{account}:user/alice"),
                name: "alice".to_owned(),
            });
        }

        Self {
            rng,
            anchor,
            source,
            targets,
            owners,
            ids: HashSet::new(),
            starts: Vec::new(),
        }
    }

    fn sessions(&mut self, history: usize, active: usize) -> Vec<SessionRecord> {
        let mut out = Vec::with_capacity(history + active);
        for _ in 0..history {
            out.push(self.history_session());
        }
        for _ in 0..active {
            out.push(self.active_session());
        }
        out
    }

    fn history_session(&mut self) -> SessionRecord {
        let roll = self.rng.below(100);
        let status = match roll {
            0..85 => SessionStatus::Terminated,
            85..95 => SessionStatus::Failed,
            _ => SessionStatus::Terminating,
        };
        // Failed sessions die within a minute; others last up to 8 hours.
        let duration_ms = match status {
            SessionStatus::Failed => 1_000 + self.rng.below(59_000) as i64,
            _ => 30_000 + self.rng.below(8 * HOUR_MS as u64) as i64,
        };
        let start = match status {
            // Being terminated now: started within the last half day.
            SessionStatus::Terminating => self.start_within(60_000, 12 * HOUR_MS),
            _ => self.start_within(duration_ms + 60_000, 30 * DAY_MS),
        };
        let end = match status {
            SessionStatus::Terminating => None,
            _ => Some(start + Duration::milliseconds(duration_ms)),
        };
        let mut s = self.base(status, start, end);
        if status == SessionStatus::Terminated && self.rng.chance(2, 5) {
            s.output_url = Some(self.output_url(&s.session_id));
        }
        // A few old records predate the AccessType member.
        if self.rng.chance(1, 30) {
            s.access_type = None;
        }
        s
    }

    fn active_session(&mut self) -> SessionRecord {
        let roll = self.rng.below(100);
        let (status, window) = match roll {
            0..75 => (SessionStatus::Connected, 6 * HOUR_MS),
            75..94 => (SessionStatus::Disconnected, 6 * HOUR_MS),
            _ => (SessionStatus::Connecting, 120_000),
        };
        let start = self.start_within(1_000, window);
        self.base(status, start, None)
    }

    /// A start date `min_ms..=max_ms` before the anchor, sometimes reusing an
    /// earlier start exactly (so the SessionId tie-break is exercised), mostly
    /// on whole seconds, sometimes with milliseconds.
    fn start_within(&mut self, min_ms: i64, max_ms: i64) -> DateTime<Utc> {
        let earliest = self.anchor - Duration::milliseconds(max_ms);
        let latest = self.anchor - Duration::milliseconds(min_ms);
        if !self.starts.is_empty() && self.rng.chance(1, 10) {
            let candidate = *self.rng.pick(&self.starts);
            if candidate >= earliest && candidate <= latest {
                return candidate;
            }
        }
        let span = (max_ms - min_ms).max(1) as u64;
        let mut offset = min_ms + self.rng.below(span + 1) as i64;
        if self.rng.chance(7, 10) {
            // Whole seconds, rounded towards the past so min_ms still holds.
            offset = offset.div_euclid(1000) * 1000 + 1000;
            offset = offset.min(max_ms.max(min_ms));
        }
        let start = self.anchor - Duration::milliseconds(offset);
        self.starts.push(start);
        start
    }

    fn base(
        &mut self,
        status: SessionStatus,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
    ) -> SessionRecord {
        let owner_ix = self.rng.skewed(self.owners.len());
        let target_ix = self.rng.skewed(self.targets.len());
        let session_id = loop {
            let id = format!("{}-{}", self.owners[owner_ix].name, self.rng.hex(17));
            if self.ids.insert(id.clone()) {
                break id;
            }
        };
        let document_name = (*self.rng.pick(DOCUMENTS)).to_owned();
        let access_type = if self.rng.chance(1, 8) {
            AccessType::JustInTime
        } else {
            AccessType::Standard
        };
        // Just-in-time access asks for a reason far more often.
        let reason_odds = if access_type == AccessType::JustInTime {
            4
        } else {
            1
        };
        let reason = self
            .rng
            .chance(reason_odds, 5)
            .then(|| (*self.rng.pick(REASONS)).to_owned());
        let max_session_duration = self
            .rng
            .chance(1, 4)
            .then(|| (*self.rng.pick(MAX_DURATIONS)).to_owned());
        SessionRecord {
            session_id,
            target: self.targets[target_ix].clone(),
            status,
            start_date: start,
            end_date: end,
            document_name,
            owner: self.owners[owner_ix].arn.clone(),
            reason,
            details: None,
            output_url: None,
            max_session_duration,
            access_type: Some(access_type),
        }
    }

    /// Managed nodes for the target pool: every target no session used (an
    /// idle fleet) and most of those `sessions` used: all but
    /// [`UNREGISTERED_PERCENT`] of them (at least one when two or more were
    /// used), chosen by `rng`, are left without a node.
    fn nodes(&self, mut rng: SplitMix64, sessions: &[SessionRecord]) -> Vec<NodeRecord> {
        let used_targets: HashSet<&str> = sessions.iter().map(|s| s.target.as_str()).collect();
        // Pool order, not the hash set's, so the draw is deterministic.
        let used: Vec<usize> = (0..self.targets.len())
            .filter(|&i| used_targets.contains(self.targets[i].as_str()))
            .collect();
        let unregistered = if used.len() < 2 {
            0
        } else {
            (used.len() * UNREGISTERED_PERCENT).div_ceil(100)
        };
        let mut skip = HashSet::new();
        while skip.len() < unregistered {
            skip.insert(used[rng.below(used.len() as u64) as usize]);
        }
        self.targets
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, id)| self.node(&mut rng, id))
            .collect()
    }

    fn node(&self, rng: &mut SplitMix64, instance_id: &str) -> NodeRecord {
        let resource_type = ResourceType::of_instance_id(instance_id);
        let ec2 = resource_type == ResourceType::EC2Instance;
        let platform_type = match rng.below(100) {
            // Mac hosts exist only as EC2 dedicated hosts.
            0..5 if ec2 => PlatformType::MacOS,
            0..25 => PlatformType::Windows,
            _ => PlatformType::Linux,
        };
        let &(platform_name, platform_version) = rng.pick(match platform_type {
            PlatformType::Linux => LINUX,
            PlatformType::Windows => WINDOWS,
            PlatformType::MacOS => MACOS,
        });
        let (ping_status, last_ping) = match rng.below(100) {
            0..85 => (PingStatus::Online, rng.below(300_000) as i64),
            85..97 => (
                PingStatus::ConnectionLost,
                HOUR_MS + rng.below(7 * DAY_MS as u64) as i64,
            ),
            _ => (
                PingStatus::Inactive,
                30 * DAY_MS + rng.below(60 * DAY_MS as u64) as i64,
            ),
        };
        let agent_version = if rng.chance(3, 5) {
            LATEST_AGENT
        } else {
            rng.pick(OLDER_AGENTS)
        };
        let (a, b) = (rng.below(16), 1 + rng.below(254));
        let ip_address = if ec2 {
            format!("10.0.{a}.{b}")
        } else {
            format!("192.168.{a}.{b}")
        };
        let region = &self.source.region;
        let host = format!("{}-{:02}", rng.pick(HOSTS), 1 + rng.below(40));
        let computer_name = match (ec2, platform_type) {
            (true, PlatformType::Windows) => {
                format!("EC2AMAZ-{}", rng.hex(7).to_ascii_uppercase())
            }
            (true, _) => {
                let domain = if region == "us-east-1" {
                    "ec2.internal".to_owned()
                } else {
                    format!("{region}.compute.internal")
                };
                format!("ip-{}.{domain}", ip_address.replace('.', "-"))
            }
            (false, _) => format!("{host}.corp.example.com"),
        };
        let mut node = NodeRecord {
            instance_id: instance_id.to_owned(),
            ping_status,
            last_ping_date_time: self.anchor - Duration::milliseconds(last_ping),
            agent_version: agent_version.to_owned(),
            is_latest_version: agent_version == LATEST_AGENT,
            platform_type,
            platform_name: platform_name.to_owned(),
            platform_version: platform_version.to_owned(),
            resource_type,
            ip_address,
            computer_name,
            iam_role: None,
            activation_id: None,
            registration_date: None,
            name: None,
            source_id: Some(instance_id.to_owned()),
            source_type: Some(if ec2 {
                "AWS::EC2::Instance".to_owned()
            } else {
                "AWS::SSM::ManagedInstance".to_owned()
            }),
        };
        if ec2 {
            node.iam_role = rng
                .chance(4, 5)
                .then(|| "AmazonSSMRoleForInstancesQuickSetup".to_owned());
        } else {
            let uuid = rng.hex(32);
            node.activation_id = Some(format!(
                "{}-{}-{}-{}-{}",
                &uuid[..8],
                &uuid[8..12],
                &uuid[12..16],
                &uuid[16..20],
                &uuid[20..]
            ));
            node.iam_role = Some("SSMServiceRole".to_owned());
            node.registration_date = Some(
                self.anchor
                    - Duration::milliseconds(90 * DAY_MS + rng.below(DAY_MS as u64 * 300) as i64),
            );
            node.name = Some(host);
        }
        node
    }

    fn output_url(&mut self, session_id: &str) -> OutputUrl {
        let SourceSpec {
            account_id, region, ..
        } = self.source;
        let s3 = format!(
            "https://s3.console.aws.amazon.com/s3/object/ssm-session-logs-{account_id}?region={region}&prefix=sessions/{session_id}.log"
        );
        let cloud_watch = format!(
            "https://console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group=/aws/ssm/sessions;stream={session_id}"
        );
        match self.rng.below(3) {
            0 => OutputUrl {
                s3_output_url: Some(s3),
                cloud_watch_output_url: None,
            },
            1 => OutputUrl {
                s3_output_url: None,
                cloud_watch_output_url: Some(cloud_watch),
            },
            _ => OutputUrl {
                s3_output_url: Some(s3),
                cloud_watch_output_url: Some(cloud_watch),
            },
        }
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn anchor() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 29, 10, 0, 0).unwrap()
    }

    fn spec(seed: u64, active: usize, history: usize) -> DataSpec {
        DataSpec {
            seed,
            anchor: anchor(),
            sources: vec![
                SourceSpec::new("111122223333", "us-east-1", active, history),
                SourceSpec::new("444455556666", "eu-west-1", history / 2, active),
            ],
        }
    }

    fn is_hex17(s: &str) -> bool {
        s.len() == 17
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// `^[a-zA-Z0-9_\-.]{3,128}$`
    fn is_document_name(s: &str) -> bool {
        (3..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    }

    /// `^([1-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-4][0-3][0-9]|1440)$`
    fn is_max_session_duration(s: &str) -> bool {
        let b = s.as_bytes();
        let nonzero = |c: u8| (b'1'..=b'9').contains(&c);
        match b.len() {
            1..=3 => nonzero(b[0]) && b.iter().all(u8::is_ascii_digit),
            4 => {
                s == "1440"
                    || (b[0] == b'1'
                        && (b'0'..=b'4').contains(&b[1])
                        && (b'0'..=b'3').contains(&b[2])
                        && b[3].is_ascii_digit())
            }
            _ => false,
        }
    }

    #[test]
    fn pattern_helpers_follow_the_model() {
        assert!(
            is_max_session_duration("1439")
                && is_max_session_duration("1440")
                && is_max_session_duration("7")
        );
        for bad in ["0", "01", "1045", "1441", "1500", "", "60m"] {
            assert!(!is_max_session_duration(bad), "{bad}");
        }
        assert!(
            is_document_name("AWS-StartSSHSession")
                && !is_document_name("ab")
                && !is_document_name("a b c")
        );
    }

    fn check_record(account: &str, s: &SessionRecord, anchor: DateTime<Utc>) {
        let (name, hex) = s.session_id.rsplit_once('-').expect("id is name-hex");
        assert!(!name.is_empty() && is_hex17(hex), "{}", s.session_id);
        assert!((1..=96).contains(&s.session_id.len()));
        let node = s
            .target
            .strip_prefix("i-")
            .or_else(|| s.target.strip_prefix("mi-"));
        assert!(node.is_some_and(is_hex17), "{}", s.target);
        assert!(is_document_name(&s.document_name), "{}", s.document_name);
        assert!((1..=256).contains(&s.owner.len()));
        let user = format!("arn:aws:iam::{account}:user/{name}");
        let role = format!("arn:aws:sts::{account}:assumed-role/");
        assert!(
            s.owner == user
                || (s.owner.starts_with(&role) && s.owner.ends_with(&format!("/{name}"))),
            "{} owns {}",
            s.owner,
            s.session_id
        );
        if let Some(r) = &s.reason {
            assert!((1..=256).contains(&r.chars().count()) && !r.contains('\n'));
        }
        if let Some(d) = &s.max_session_duration {
            assert!(is_max_session_duration(d), "{d}");
        }
        if let Some(url) = &s.output_url {
            assert!(url.s3_output_url.is_some() || url.cloud_watch_output_url.is_some());
            for u in [&url.s3_output_url, &url.cloud_watch_output_url]
                .into_iter()
                .flatten()
            {
                assert!((1..=2083).contains(&u.len()));
            }
        }
        assert!(s.start_date <= anchor && s.start_date >= anchor - Duration::days(30));
        match s.state() {
            SessionState::Active => {
                assert!(s.end_date.is_none());
                assert!(s.start_date >= anchor - Duration::hours(6));
            }
            SessionState::History => match s.end_date {
                Some(end) => {
                    assert!(end > s.start_date && end <= anchor);
                    assert_ne!(s.status, SessionStatus::Terminating);
                }
                None => assert_eq!(s.status, SessionStatus::Terminating),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn generated_records_respect_the_model(seed in any::<u64>(), active in 0usize..40, history in 0usize..120) {
            let spec = spec(seed, active, history);
            let data = Dataset::generate(&spec);
            for source in &spec.sources {
                let sessions = data.sessions(&source.account_id, &source.region);
                prop_assert_eq!(sessions.iter().filter(|s| s.state() == SessionState::Active).count(), source.active);
                prop_assert_eq!(sessions.iter().filter(|s| s.state() == SessionState::History).count(), source.history);
                for s in sessions {
                    check_record(&source.account_id, s, spec.anchor);
                }
                for w in sessions.windows(2) {
                    prop_assert_eq!(session_order(&w[0], &w[1]), Ordering::Less);
                }
            }
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let a = Dataset::generate(&spec(9, 10, 50));
        let b = Dataset::generate(&spec(9, 10, 50));
        assert_eq!(
            a.sessions("111122223333", "us-east-1"),
            b.sessions("111122223333", "us-east-1")
        );
        let c = Dataset::generate(&spec(10, 10, 50));
        assert_ne!(
            a.sessions("111122223333", "us-east-1"),
            c.sessions("111122223333", "us-east-1")
        );
        // Pinned, so a change to the generator is a visible decision.
        let demo = Dataset::demo(anchor());
        assert_eq!(
            demo.sessions("111122223333", "us-east-1")[0].session_id,
            PINNED_DEMO_FIRST_ID
        );
    }

    /// First session of the demo account in us-east-1 for the anchor above.
    const PINNED_DEMO_FIRST_ID: &str = "erin-865f99de6c57e04cd";

    #[test]
    fn demo_shape() {
        let data = Dataset::demo(anchor());
        let sources: Vec<(&str, &str)> = data.sources().collect();
        assert_eq!(sources.len(), 6);
        for account in super::super::DEMO_ACCOUNT_IDS {
            for region in ["us-east-1", "eu-west-1"] {
                assert!(sources.contains(&(account, region)), "{account} {region}");
            }
        }
        let sizes: HashSet<usize> = sources
            .iter()
            .map(|(a, r)| data.sessions(a, r).len())
            .collect();
        assert_eq!(sizes.len(), 6, "sources differ in size");
        let main = data.sessions(super::super::DEMO_ACCOUNT_ID, "us-east-1");
        let active = main
            .iter()
            .filter(|s| s.state() == SessionState::Active)
            .count();
        assert!((200..500).contains(&(main.len() - active)) && (20..100).contains(&active));
    }

    #[test]
    fn demo_data_gives_every_filter_something_to_do() {
        let data = Dataset::demo(anchor());
        let main = data.sessions(super::super::DEMO_ACCOUNT_ID, "us-east-1");
        let n = main.len();
        let share = |count: usize| count > 0 && count < n;
        let most_common = |key: &dyn Fn(&SessionRecord) -> &str| {
            let mut counts = std::collections::HashMap::new();
            for s in main {
                *counts.entry(key(s).to_owned()).or_insert(0usize) += 1;
            }
            counts.into_values().max().unwrap_or(0)
        };
        assert!(share(most_common(&|s| &s.target)) && most_common(&|s| &s.target) >= 5);
        assert!(share(most_common(&|s| &s.owner)) && most_common(&|s| &s.owner) >= 5);
        assert!(main.iter().any(|s| s.target.starts_with("mi-")));
        assert!(
            main.iter().any(|s| s.owner.contains(":assumed-role/"))
                && main.iter().any(|s| s.owner.contains(":user/"))
        );
        for status in SessionStatus::ALL {
            assert!(
                share(main.iter().filter(|s| s.status == status).count()),
                "{status:?}"
            );
        }
        assert!(share(
            main.iter()
                .filter(|s| s.access_type == Some(AccessType::JustInTime))
                .count()
        ));
        let week_ago = anchor() - Duration::days(7);
        assert!(share(
            main.iter().filter(|s| s.start_date >= week_ago).count()
        ));
        assert!(
            main.windows(2).any(|w| w[0].start_date == w[1].start_date),
            "ties exist"
        );
        assert!(
            main.iter()
                .any(|s| s.start_date.timestamp_subsec_millis() != 0),
            "fractional seconds exist"
        );
        assert!(main.iter().any(|s| s.reason.is_some()) && main.iter().any(|s| s.reason.is_none()));
        assert!(
            main.iter().any(|s| s.output_url.is_some())
                && main.iter().any(|s| s.max_session_duration.is_some())
        );
        assert!(
            main.iter()
                .any(|s| s.document_name != "SSM-SessionManagerRunShell")
        );
    }

    #[test]
    fn most_targets_have_a_node() {
        let data = Dataset::demo(anchor());
        let again = Dataset::demo(anchor());
        let mut kinds = HashSet::new();
        for (account, region) in data.sources() {
            let nodes = data.nodes(account, region);
            assert_eq!(nodes, again.nodes(account, region), "deterministic");
            let targets: HashSet<&str> = data
                .sessions(account, region)
                .iter()
                .map(|s| s.target.as_str())
                .collect();
            let registered = targets
                .iter()
                .filter(|t| nodes.iter().any(|n| n.instance_id == **t))
                .count();
            assert!(
                registered < targets.len() || targets.len() < 2,
                "{account} {region}: some unregistered"
            );
            assert!(nodes.len() >= registered, "idle nodes too");
            assert!(
                registered * 100 >= targets.len() * 60,
                "{account} {region}: most registered ({registered}/{})",
                targets.len()
            );
            for n in nodes {
                assert_eq!(
                    n.resource_type,
                    ResourceType::of_instance_id(&n.instance_id)
                );
                assert!(n.last_ping_date_time <= anchor());
                assert_eq!(n.is_latest_version, n.agent_version == LATEST_AGENT);
                kinds.insert(n.ping_status.as_str());
                kinds.insert(n.platform_type.as_str());
                kinds.insert(n.resource_type.as_str());
            }
        }
        for k in PingStatus::ALL.map(PingStatus::as_str) {
            assert!(kinds.contains(k), "{k}");
        }
        for k in PlatformType::ALL.map(PlatformType::as_str) {
            assert!(kinds.contains(k), "{k}");
        }
        for k in ResourceType::ALL.map(ResourceType::as_str) {
            assert!(kinds.contains(k), "{k}");
        }
    }

    #[test]
    fn insert_keeps_order_and_replaces_by_id() {
        let mut data = Dataset::generate(&spec(1, 5, 20));
        let (acct, region) = ("111122223333", "us-east-1");
        let mut s = data.sessions(acct, region)[3].clone();
        let before = data.sessions(acct, region).len();
        s.start_date = anchor();
        data.insert(acct, region, s.clone());
        assert_eq!(data.sessions(acct, region).len(), before);
        assert_eq!(data.sessions(acct, region)[0], s);
        data.insert("999999999999", "ap-south-1", s.clone());
        assert_eq!(data.sessions("999999999999", "ap-south-1"), [s]);
        assert!(data.sessions("000000000000", "us-east-1").is_empty());
    }
}
