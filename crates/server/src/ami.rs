//! Asterisk Manager Interface (AMI): calltrail dials the PBX itself (Asterisk, FreePBX)
//! as an AMI client, one client per `asterisk_ami` connection, and turns the channel
//! events of each call into [`CallEvent`]s (docs/telephony.md).
//!
//! Three parts:
//! - the wire: [`Framer`] cuts the byte stream into the banner line and packets of
//!   `Key: Value` lines ended by an empty line; [`action`] writes one;
//! - [`Tracker`], pure: groups events by `Linkedid` (the Uniqueid of the oldest channel of
//!   a call) and says when a call started, was answered and ended;
//! - the client ([`spawn_all`]): TCP connect, banner, `Action: Login`, events,
//!   `Action: Ping` to notice a dead link, reconnects with backoff; a writer stores what the
//!   tracker says through [`hooks::ingest`], retrying while the database is away.
//!
//! What is taken from the events:
//! - **Started**: the first channel of a Linkedid (its `Uniqueid` equals the `Linkedid`):
//!   `CallerIDNum` is the caller; the called number is the value of the connection's
//!   `did_variable` (e.g. FreePBX's `FROM_DID`, seen in `VarSet` events) when one is set and
//!   seen before the call is dialled anywhere, else the first channel's `Exten` (on an inbound
//!   trunk this is the DID from the request). A call whose caller is an internal extension
//!   (1-6 digits: internal and outbound calls) or whose called number is not a phone number
//!   is not stored.
//! - **Answered**: a `DialEnd` with `DialStatus: ANSWER`; the agent is the answering
//!   endpoint (`DestCallerIDNum`, else the peer in `DestChannel`, `PJSIP/101-0000002` → `101`),
//!   preferring a real endpoint over a `Local/` channel.
//! - **Ended**: when the last channel of the Linkedid hangs up (status: answered if someone
//!   answered, else from the dial statuses: no answer or cancel → missed, busy → busy,
//!   congestion or unavailable → failed, no dial → missed); a `Cdr` event then overrides the
//!   status with its `Disposition` (several Cdrs of one call: the best wins). A Cdr saying
//!   ANSWERED for a call calltrail saw whole, with no one answering a dial, means the PBX
//!   answered itself (IVR, announcement): voicemail if its last application was VoiceMail,
//!   else the dial status. A Cdr alone (the client was away during the call) makes the call.
//!
//! Times are the events' `Timestamp` (manager.conf `timestampevents = yes`) or the time of
//! receipt. The provider call id is `{connection id}:{Linkedid}`, so a repeated event stream,
//! a reconnect or two calltrail servers on one PBX make one call.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use calltrail_core::engine::Millis;
use calltrail_core::Region;
use calltrail_store::calls::{CallEvent, CallEventKind};
use calltrail_store::telephony::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::hooks::{self, phone};
use crate::AppState;

pub const PROVIDER: &str = "asterisk_ami";
pub const DEFAULT_PORT: u16 = 5038;
/// Largest packet accepted; a longer one means the peer is not speaking AMI.
pub const MAX_PACKET: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// The wire

/// One AMI packet: its `Key: Value` lines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    pub fields: Vec<(String, String)>,
}

impl Packet {
    /// Read the lines of one packet (without its empty line). Lines without a colon are
    /// kept as values of an empty key (the output of some commands).
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                None => (String::new(), l.to_owned()),
            })
            .collect();
        Self { fields }
    }

    /// The first value of `key` (keys compare without case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// A value that says something: absent, empty and `<unknown>` are `None`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("<unknown>"))
    }

    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The packet as text, for the webhook log.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            let _ = writeln!(s, "{k}: {v}");
        }
        s
    }
}

/// Why the link to the PBX is given up (and dialled again after a pause).
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Timeout(&'static str),
}

/// An action to send; fails on values that would break the framing (CR or LF).
pub fn action(name: &str, fields: &[(&str, &str)]) -> Result<String, AmiError> {
    let mut s = String::new();
    for (k, v) in std::iter::once(&("Action", name)).chain(fields) {
        if v.contains(['\r', '\n']) || k.contains(['\r', '\n', ':']) {
            return Err(AmiError::Config(format!(
                "`{k}` may not contain a line break"
            )));
        }
        let _ = write!(s, "{k}: {v}\r\n");
    }
    s.push_str("\r\n");
    Ok(s)
}

/// Cuts what the PBX sends into the banner line and then packets.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// How far `buf` was searched for the end of a packet.
    scanned: usize,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn check_size(&self) -> Result<(), AmiError> {
        if self.buf.len() > MAX_PACKET {
            return Err(AmiError::Protocol(format!(
                "no end of packet in {MAX_PACKET} bytes: not an AMI server?"
            )));
        }
        Ok(())
    }

    /// The banner (`Asterisk Call Manager/5.0.1`), once its line is complete.
    pub fn banner(&mut self) -> Result<Option<String>, AmiError> {
        let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
            self.check_size()?;
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&self.buf[..end]).trim().to_owned();
        self.buf.drain(..=end);
        self.scanned = 0;
        if !line.contains("Call Manager") {
            return Err(AmiError::Protocol(format!(
                "`{}` is not an AMI banner (expected `Asterisk Call Manager/x.y.z`)",
                line.chars().take(80).collect::<String>()
            )));
        }
        Ok(Some(line))
    }

    /// The next complete packet. Packets end with an empty line (`\r\n\r\n`; a bare
    /// `\n\n` is taken too); empty lines between packets are skipped.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, AmiError> {
        loop {
            let from = self.scanned.saturating_sub(2);
            let mut end = None;
            let mut i = from;
            while i < self.buf.len() {
                if self.buf[i] == b'\n' {
                    // A line break at the very start is an empty line before any field.
                    if i == 0 || (i == 1 && self.buf[0] == b'\r') {
                        end = Some(i + 1);
                        break;
                    }
                    match (self.buf.get(i + 1), self.buf.get(i + 2)) {
                        (Some(b'\n'), _) => {
                            end = Some(i + 2);
                            break;
                        }
                        (Some(b'\r'), Some(b'\n')) => {
                            end = Some(i + 3);
                            break;
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            let Some(end) = end else {
                self.scanned = self.buf.len();
                self.check_size()?;
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end);
            self.scanned = 0;
            let p = Packet::parse(&text);
            if !p.fields.is_empty() {
                return Ok(Some(p));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Calls from events

/// What the tracker says happened to a call, in calltrail's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiCall {
    pub linkedid: String,
    pub kind: CallEventKind,
    /// E.164 or `hidden`.
    pub from: String,
    /// E.164.
    pub to: String,
    pub started_at: Millis,
    pub answered_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub status: Option<String>,
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Pending,
    Started { from: String, to: String },
    Skipped,
}

#[derive(Debug, Clone)]
struct Track {
    /// The first channel was seen (so was the whole call).
    observed: bool,
    caller: Option<String>,
    exten: Option<String>,
    did: Option<String>,
    started_at: Millis,
    live: HashSet<String>,
    decision: Decision,
    answered_at: Option<Millis>,
    /// (rank, agent): a real endpoint (2) over a Local channel (1).
    agent: Option<(u8, String)>,
    dial_status: Option<&'static str>,
    ended_at: Option<Millis>,
    cdr_status: Option<&'static str>,
    touched: Millis,
}

impl Track {
    fn new(at: Millis) -> Self {
        Self {
            observed: false,
            caller: None,
            exten: None,
            did: None,
            started_at: at,
            live: HashSet::new(),
            decision: Decision::Pending,
            answered_at: None,
            agent: None,
            dial_status: None,
            ended_at: None,
            cdr_status: None,
            touched: at,
        }
    }

    /// The status as the channel events tell it.
    fn status_now(&self) -> &'static str {
        if self.answered_at.is_some() {
            "answered"
        } else {
            self.dial_status.unwrap_or("missed")
        }
    }
}

/// How sure a final status is, to choose among several (Cdrs of one call, dial legs).
fn rank(status: &str) -> u8 {
    match status {
        "answered" => 5,
        "voicemail" => 4,
        "missed" => 3,
        "busy" => 2,
        _ => 1,
    }
}

/// An internal extension rather than a phone number: 1-6 digits.
pub fn is_extension(raw: &str) -> bool {
    let t = raw.trim();
    (1..=6).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
}

/// The endpoint a channel name names: `PJSIP/101-00000002` → `101`,
/// `Local/101@from-queue-0000001;2` → `101`.
pub fn channel_peer(channel: &str) -> Option<&str> {
    let rest = channel.split_once('/')?.1;
    let peer = match rest.split_once('@') {
        Some((p, _)) => p,
        None => rest.rsplit_once('-').map_or(rest, |(p, _)| p),
    };
    Some(peer).filter(|p| !p.is_empty())
}

/// Groups AMI events by Linkedid into calls. Pure: feed it packets, get call events.
#[derive(Debug)]
pub struct Tracker {
    region: Region,
    did_variable: Option<String>,
    calls: HashMap<String, Track>,
    /// Uniqueid → Linkedid of the channels alive.
    channels: HashMap<String, String>,
}

/// How long a finished call is remembered (for its late Cdr and repeated events).
const KEEP_ENDED_MS: Millis = 10 * 60 * 1000;
/// How long an unfinished call is remembered without news.
const KEEP_OPEN_MS: Millis = 12 * 3600 * 1000;

impl Tracker {
    /// `did_variable`: a channel variable holding the called number (e.g. `FROM_DID`).
    pub fn new(region: Region, did_variable: Option<String>) -> Self {
        Self {
            region,
            did_variable: did_variable
                .map(|v| v.trim().trim_start_matches('_').to_owned())
                .filter(|v| !v.is_empty()),
            calls: HashMap::new(),
            channels: HashMap::new(),
        }
    }

    /// Calls remembered (finished ones stay a while).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Forget calls long finished or long silent.
    pub fn sweep(&mut self, now: Millis) {
        self.calls.retain(|_, t| {
            let done = t.ended_at.is_some() || t.cdr_status.is_some();
            let keep = if done { KEEP_ENDED_MS } else { KEEP_OPEN_MS };
            now - t.touched < keep
        });
        let calls = &self.calls;
        self.channels.retain(|_, lid| calls.contains_key(lid));
    }

    fn linkedid(&self, p: &Packet) -> Option<String> {
        p.value("Linkedid").map(str::to_owned).or_else(|| {
            p.value("Uniqueid")
                .and_then(|u| self.channels.get(u).cloned())
        })
    }

    /// Decide whether a call is stored and with which numbers; `last_chance` when no
    /// better called number will come (it is being dialled or is over).
    fn decide(&self, t: &Track, last_chance: bool) -> Decision {
        if t.decision != Decision::Pending || !t.observed {
            return t.decision.clone();
        }
        let caller = t.caller.as_deref().unwrap_or("");
        if is_extension(caller) {
            return Decision::Skipped;
        }
        if self.did_variable.is_some() && t.did.is_none() && !last_chance {
            return Decision::Pending;
        }
        let Some(to) = t
            .did
            .as_deref()
            .or(t.exten.as_deref())
            .and_then(|n| phone(n, self.region))
            .filter(|n| n != "hidden")
        else {
            return if last_chance || self.did_variable.is_none() {
                Decision::Skipped
            } else {
                Decision::Pending
            };
        };
        let from = phone(caller, self.region).unwrap_or_else(|| "hidden".into());
        Decision::Started { from, to }
    }

    /// Move a call's decision on; the Started event when it was just made.
    fn settle(&mut self, lid: &str, last_chance: bool) -> Option<AmiCall> {
        let t = self.calls.get(lid)?;
        if t.decision != Decision::Pending {
            return None;
        }
        let d = self.decide(t, last_chance);
        let t = self.calls.get_mut(lid)?;
        t.decision = d;
        match &t.decision {
            Decision::Started { from, to } => Some(AmiCall {
                linkedid: lid.to_owned(),
                kind: CallEventKind::Started,
                from: from.clone(),
                to: to.clone(),
                started_at: t.started_at,
                answered_at: None,
                ended_at: None,
                status: None,
                agent: None,
            }),
            _ => None,
        }
    }

    fn out(lid: &str, t: &Track, kind: CallEventKind, status: Option<&str>) -> Option<AmiCall> {
        let Decision::Started { from, to } = &t.decision else {
            return None;
        };
        Some(AmiCall {
            linkedid: lid.to_owned(),
            kind,
            from: from.clone(),
            to: to.clone(),
            started_at: t.started_at,
            answered_at: t.answered_at,
            ended_at: t.ended_at,
            status: status.map(str::to_owned),
            agent: t.agent.as_ref().map(|(_, a)| a.clone()),
        })
    }

    /// Take one packet received at `received` (ms); the call events it makes.
    pub fn feed(&mut self, p: &Packet, received: Millis) -> Vec<AmiCall> {
        let at = p
            .value("Timestamp")
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(received, |t| (t * 1000.0).round() as Millis);
        let mut out = Vec::new();
        match p.event().unwrap_or("") {
            "Newchannel" => self.newchannel(p, at, received, &mut out),
            "VarSet" => self.varset(p, received, &mut out),
            "DialBegin" => {
                if let Some(lid) = self.linkedid(p) {
                    if let Some(t) = self.calls.get_mut(&lid) {
                        t.touched = received;
                    }
                    out.extend(self.settle(&lid, true));
                }
            }
            "DialEnd" => self.dialend(p, at, received, &mut out),
            "Hangup" => self.hangup(p, at, received, &mut out),
            "Cdr" => self.cdr(p, at, received, &mut out),
            _ => {}
        }
        out
    }

    fn newchannel(&mut self, p: &Packet, at: Millis, received: Millis, out: &mut Vec<AmiCall>) {
        let Some(uid) = p.value("Uniqueid").map(str::to_owned) else {
            return;
        };
        let lid = p.value("Linkedid").unwrap_or(&uid).to_owned();
        self.channels.insert(uid.clone(), lid.clone());
        let t = self
            .calls
            .entry(lid.clone())
            .or_insert_with(|| Track::new(at));
        t.touched = received;
        t.live.insert(uid.clone());
        if uid == lid && !t.observed {
            t.observed = true;
            t.started_at = at;
            t.caller = p.value("CallerIDNum").map(str::to_owned);
            t.exten = p.value("Exten").map(str::to_owned);
            out.extend(self.settle(&lid, false));
        }
    }

    fn varset(&mut self, p: &Packet, received: Millis, out: &mut Vec<AmiCall>) {
        let Some(var) = &self.did_variable else {
            return;
        };
        let named = p
            .get("Variable")
            .is_some_and(|v| v.trim_start_matches('_').eq_ignore_ascii_case(var));
        let Some(value) = p.value("Value").filter(|_| named).map(str::to_owned) else {
            return;
        };
        let Some(lid) = self.linkedid(p) else {
            return;
        };
        if let Some(t) = self.calls.get_mut(&lid) {
            t.touched = received;
            if t.did.is_none() {
                t.did = Some(value);
                out.extend(self.settle(&lid, false));
            }
        }
    }

    fn dialend(&mut self, p: &Packet, at: Millis, received: Millis, out: &mut Vec<AmiCall>) {
        let Some(lid) = self.linkedid(p) else {
            return;
        };
        if !self.calls.contains_key(&lid) {
            return;
        }
        out.extend(self.settle(&lid, true));
        let Some(t) = self.calls.get_mut(&lid) else {
            return;
        };
        t.touched = received;
        let status = p.get("DialStatus").unwrap_or("").to_ascii_uppercase();
        if status == "ANSWER" {
            t.answered_at = Some(t.answered_at.map_or(at, |a| a.min(at)));
            let dest = p.value("DestChannel").unwrap_or("");
            let local = dest.starts_with("Local/");
            let who = p
                .value("DestCallerIDNum")
                .filter(|_| !local)
                .or_else(|| channel_peer(dest))
                .map(|a| a.trim().chars().take(64).collect::<String>())
                .filter(|a| !a.is_empty());
            let r = if local { 1 } else { 2 };
            if let Some(who) = who {
                if t.agent.as_ref().is_none_or(|(have, _)| r > *have) {
                    t.agent = Some((r, who));
                }
            }
            out.extend(Self::out(&lid, t, CallEventKind::Answered, None));
        } else {
            let s = match status.as_str() {
                "NOANSWER" | "CANCEL" => Some("missed"),
                "BUSY" => Some("busy"),
                "CONGESTION" | "CHANUNAVAIL" => Some("failed"),
                _ => None,
            };
            if let Some(s) = s {
                if t.dial_status.is_none_or(|d| rank(s) > rank(d)) {
                    t.dial_status = Some(s);
                }
            }
        }
    }

    fn hangup(&mut self, p: &Packet, at: Millis, received: Millis, out: &mut Vec<AmiCall>) {
        let uid = p.value("Uniqueid").map(str::to_owned);
        let lid = self.linkedid(p);
        if let Some(u) = &uid {
            self.channels.remove(u);
        }
        let Some(lid) = lid else {
            return;
        };
        let Some(t) = self.calls.get_mut(&lid) else {
            return;
        };
        t.touched = received;
        if let Some(u) = &uid {
            t.live.remove(u);
        }
        if !t.live.is_empty() || !t.observed {
            return;
        }
        out.extend(self.settle(&lid, true));
        let Some(t) = self.calls.get_mut(&lid) else {
            return;
        };
        if t.ended_at.is_some() || t.cdr_status.is_some() {
            return;
        }
        t.ended_at = Some(at);
        let status = t.status_now();
        out.extend(Self::out(&lid, t, CallEventKind::Ended, Some(status)));
    }

    fn cdr(&mut self, p: &Packet, at: Millis, received: Millis, out: &mut Vec<AmiCall>) {
        let Some(uid) = p.value("UniqueID") else {
            return;
        };
        let lid = p
            .value("Linkedid")
            .map(str::to_owned)
            .or_else(|| self.channels.get(uid).cloned())
            .unwrap_or_else(|| uid.to_owned());
        let secs = |k: &str| {
            p.value(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v >= 0)
        };
        let duration = secs("Duration").unwrap_or(0);
        let billable = secs("BillableSeconds").unwrap_or(0);
        let disposition = p.get("Disposition").unwrap_or("").to_ascii_uppercase();
        let t = self
            .calls
            .entry(lid.clone())
            .or_insert_with(|| Track::new(at - duration * 1000));
        t.touched = received;
        if !t.observed {
            // The client was away when the call began: the Cdr tells it.
            t.observed = true;
            t.started_at = t.started_at.min(at - duration * 1000);
            t.caller = p.value("Source").map(str::to_owned);
            t.exten = p.value("Destination").map(str::to_owned);
            if disposition == "ANSWERED" && billable > 0 && t.answered_at.is_none() {
                t.answered_at = Some(at - billable * 1000);
            }
            t.ended_at = Some(at);
        }
        out.extend(self.settle(&lid, true));
        let Some(t) = self.calls.get_mut(&lid) else {
            return;
        };
        let voicemail = p
            .get("LastApplication")
            .is_some_and(|a| a.eq_ignore_ascii_case("VoiceMail"));
        let status = match disposition.as_str() {
            "ANSWERED" if voicemail && t.answered_at.is_none() => "voicemail",
            "ANSWERED" if t.answered_at.is_some() => "answered",
            "NO ANSWER" => "missed",
            "BUSY" => "busy",
            "FAILED" | "CONGESTION" => "failed",
            // ANSWERED with no one answering a dial: the PBX answered itself.
            _ => t.status_now(),
        };
        let status = match t.cdr_status {
            Some(have) if rank(have) >= rank(status) => have,
            _ => status,
        };
        t.cdr_status = Some(status);
        if t.ended_at.is_none() {
            t.ended_at = Some(at);
        }
        out.extend(Self::out(&lid, t, CallEventKind::Ended, Some(status)));
    }
}

// ---------------------------------------------------------------------------------------
// The client

/// Timings of the clients; [`Options::default`] for production.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the list of AMI connections is read (new ones start, deleted ones stop).
    pub poll: Duration,
    /// First pause before dialling again after a loss; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often `Action: Ping` is sent.
    pub ping_every: Duration,
    /// Silence after which the link is taken as dead.
    pub dead_after: Duration,
    /// Longest wait for connecting, the banner and the login answer.
    pub handshake: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ping_every: Duration::from_secs(20),
            dead_after: Duration::from_secs(65),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Start an AMI client for every `asterisk_ami` connection, now and as they are created
/// (the list is read every 30 s), and stop those of deleted connections. Aborting the
/// handle stops them all.
pub fn spawn_all(state: AppState) -> JoinHandle<()> {
    spawn_with(state, Options::default())
}

/// [`spawn_all`] with other timings (tests).
pub fn spawn_with(state: AppState, opts: Options) -> JoinHandle<()> {
    tokio::spawn(supervise(state, opts))
}

/// What makes a connection's client start again: its secret and settings.
fn fingerprint(c: &Connection) -> String {
    format!("{:?}|{}", c.secret, c.settings)
}

async fn supervise(st: AppState, opts: Options) {
    let mut set = JoinSet::new();
    let mut running: HashMap<String, (String, AbortHandle)> = HashMap::new();
    loop {
        match st.store.connections_of(PROVIDER).await {
            Ok(list) => {
                let wanted: HashMap<&str, String> = list
                    .iter()
                    .map(|c| (c.id.as_str(), fingerprint(c)))
                    .collect();
                running.retain(|id, (fp, h)| {
                    let keep = !h.is_finished() && wanted.get(id.as_str()) == Some(fp);
                    if !keep {
                        h.abort();
                        tracing::info!(connection = %id, "AMI client stopped");
                    }
                    keep
                });
                for c in list {
                    if !running.contains_key(&c.id) {
                        let fp = fingerprint(&c);
                        let id = c.id.clone();
                        let h = set.spawn(client(st.clone(), c, opts.clone()));
                        running.insert(id, (fp, h));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "AMI: cannot read the connections"),
        }
        while set.try_join_next().is_some() {}
        tokio::time::sleep(opts.poll).await;
    }
}

/// A connection's settings, checked.
#[derive(Debug, Clone)]
struct Settings {
    addr: String,
    username: String,
    secret: String,
    did_variable: Option<String>,
}

fn settings(c: &Connection) -> Result<Settings, AmiError> {
    let s = &c.settings;
    let text = |k: &str| {
        s.get(k)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let host = text("host").ok_or_else(|| AmiError::Config("settings.host is missing".into()))?;
    let port = match s.get("port") {
        None | Some(serde_json::Value::Null) => DEFAULT_PORT,
        Some(p) => p
            .as_u64()
            .or_else(|| p.as_str().and_then(|p| p.trim().parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| AmiError::Config("settings.port is not a TCP port".into()))?,
    };
    let username =
        text("username").ok_or_else(|| AmiError::Config("settings.username is missing".into()))?;
    let secret = c
        .secret
        .clone()
        .ok_or_else(|| AmiError::Config("the connection has no AMI password".into()))?;
    let did_variable = text("did_variable");
    for v in [&host, &username, &secret]
        .into_iter()
        .chain(did_variable.as_ref())
    {
        if v.contains(['\r', '\n']) {
            return Err(AmiError::Config(
                "host, username, password and did_variable may not contain line breaks".into(),
            ));
        }
    }
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Settings {
        addr,
        username,
        secret,
        did_variable,
    })
}

fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// One connection's client: dials, follows, dials again; a writer stores the calls.
async fn client(st: AppState, conn: Connection, opts: Options) {
    let cfg = match settings(&conn) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(connection = %conn.id, error = %e, "AMI connection cannot be used");
            return;
        }
    };
    // Events wait here while the database is away; reading stops when it is full.
    let (tx, rx) = mpsc::channel::<CallEvent>(10_000);
    let writer = store_events(st.clone(), rx);
    let reader = async {
        let mut tracker: Option<Tracker> = None;
        let mut backoff = opts.backoff_min;
        loop {
            let mut logged_in = false;
            let r = session(&st, &conn, &cfg, &opts, &mut tracker, &tx, &mut logged_in).await;
            if logged_in {
                backoff = opts.backoff_min;
            }
            match r {
                Err(AmiError::LoginRefused(m)) => tracing::warn!(
                    connection = %conn.id, addr = %cfg.addr, user = %cfg.username, message = %m,
                    retry_in = ?backoff, "AMI login refused (check the username and password in manager.conf)"
                ),
                Err(e) => tracing::warn!(
                    connection = %conn.id, addr = %cfg.addr, error = %e, retry_in = ?backoff,
                    "AMI link lost"
                ),
                Ok(()) => {}
            }
            st.metrics.count("calltrail_ami_reconnects_total");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    };
    tokio::join!(reader, writer);
}

async fn read_some(
    stream: &mut TcpStream,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<(), AmiError> {
    let n = stream.read(buf).await?;
    if n == 0 {
        return Err(AmiError::Protocol("the PBX closed the connection".into()));
    }
    framer.push(&buf[..n]);
    Ok(())
}

async fn session(
    st: &AppState,
    conn: &Connection,
    cfg: &Settings,
    opts: &Options,
    tracker: &mut Option<Tracker>,
    tx: &mpsc::Sender<CallEvent>,
    logged_in: &mut bool,
) -> Result<(), AmiError> {
    let region = hooks::site_region(st, conn)
        .await
        .map_err(|e| AmiError::Config(format!("the site's region: {e}")))?;
    let tracker = tracker.get_or_insert_with(|| Tracker::new(region, cfg.did_variable.clone()));
    let deadline = Instant::now() + opts.handshake;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(&cfg.addr))
        .await
        .map_err(|_| AmiError::Timeout("no TCP connection"))??;
    let _ = stream.set_nodelay(true);
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    let banner = loop {
        if let Some(b) = framer.banner()? {
            break b;
        }
        tokio::time::timeout_at(deadline, read_some(&mut stream, &mut framer, &mut buf))
            .await
            .map_err(|_| AmiError::Timeout("no AMI banner"))??;
    };
    let events = if cfg.did_variable.is_some() {
        "call,cdr,dialplan"
    } else {
        "call,cdr"
    };
    let login = action(
        "Login",
        &[
            ("ActionID", "calltrail-login"),
            ("Username", &cfg.username),
            ("Secret", &cfg.secret),
            ("Events", events),
        ],
    )?;
    stream.write_all(login.as_bytes()).await?;
    loop {
        if let Some(p) = framer.next_packet()? {
            match p.get("Response") {
                Some(r) if r.eq_ignore_ascii_case("Success") => break,
                Some(_) => {
                    return Err(AmiError::LoginRefused(
                        p.get("Message").unwrap_or("no message").to_owned(),
                    ))
                }
                None => continue,
            }
        }
        tokio::time::timeout_at(deadline, read_some(&mut stream, &mut framer, &mut buf))
            .await
            .map_err(|_| AmiError::Timeout("no answer to Login"))??;
    }
    *logged_in = true;
    tracing::info!(connection = %conn.id, addr = %cfg.addr, %banner, "AMI connected");
    let mut ping = tokio::time::interval(opts.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_rx = Instant::now();
    let mut pings: u64 = 0;
    loop {
        while let Some(p) = framer.next_packet()? {
            last_rx = Instant::now();
            if p.event().is_none() {
                continue;
            }
            for c in tracker.feed(&p, now_ms()) {
                let ev = call_event(conn, &c, &p);
                if tx.send(ev).await.is_err() {
                    return Err(AmiError::Protocol("the writer stopped".into()));
                }
            }
        }
        tokio::select! {
            r = read_some(&mut stream, &mut framer, &mut buf) => r?,
            _ = ping.tick() => {
                if last_rx.elapsed() > opts.dead_after {
                    return Err(AmiError::Timeout("no answer to Ping: the link is dead"));
                }
                pings += 1;
                let a = action("Ping", &[("ActionID", &format!("calltrail-ping-{pings}"))])?;
                tokio::time::timeout(opts.handshake, stream.write_all(a.as_bytes()))
                    .await
                    .map_err(|_| AmiError::Timeout("cannot send Ping"))??;
                tracker.sweep(now_ms());
            }
        }
    }
}

fn call_event(conn: &Connection, c: &AmiCall, p: &Packet) -> CallEvent {
    CallEvent {
        account_id: conn.account_id.clone(),
        site_id: conn.site_id.clone(),
        connection_id: Some(conn.id.clone()),
        provider: PROVIDER.into(),
        provider_call_id: format!("{}:{}", conn.id, c.linkedid),
        kind: c.kind,
        from: Some(c.from.clone()),
        to: Some(c.to.clone()),
        started_at: Some(c.started_at),
        answered_at: c.answered_at,
        ended_at: c.ended_at,
        status: c.status.clone(),
        agent: c.agent.clone(),
        recording_url: None,
        raw: p.to_text(),
        received_at: now_ms(),
    }
}

/// Store events in order; wait and try again while the database is away.
async fn store_events(st: AppState, mut rx: mpsc::Receiver<CallEvent>) {
    while let Some(ev) = rx.recv().await {
        let mut delay = Duration::from_millis(200);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match hooks::ingest(&st, &ev).await {
                Ok(_) => break,
                Err(e @ (ApiError::Unavailable | ApiError::Internal(_))) if tries < 1000 => {
                    tracing::warn!(call = %ev.provider_call_id, error = %e, retry_in = ?delay, "AMI event not stored yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::error!(call = %ev.provider_call_id, error = %e, "AMI event dropped");
                    st.metrics.count(
                        "calltrail_webhook_rejected_total{provider=\"asterisk_ami\",reason=\"store\"}",
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(lines: &[(&str, &str)]) -> Packet {
        Packet {
            fields: lines
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn framing_survives_any_split() {
        let wire = "Asterisk Call Manager/5.0.1\r\nResponse: Success\r\nMessage: Authentication accepted\r\n\r\n\r\nEvent: Hangup\nUniqueid: 1.1\n\nEvent: Cdr\r\nAccountCode: \r\nUniqueID: 1.1\r\n\r\n";
        for step in 1..wire.len() {
            let mut f = Framer::default();
            let mut banner = None;
            let mut got = Vec::new();
            for chunk in wire.as_bytes().chunks(step) {
                f.push(chunk);
                if banner.is_none() {
                    banner = f.banner().unwrap_or_else(|e| panic!("{e}"));
                    if banner.is_none() {
                        continue;
                    }
                }
                while let Some(p) = f.next_packet().unwrap_or_else(|e| panic!("{e}")) {
                    got.push(p);
                }
            }
            assert_eq!(banner.as_deref(), Some("Asterisk Call Manager/5.0.1"));
            assert_eq!(got.len(), 3, "step {step}: {got:?}");
            assert_eq!(got[0].get("response"), Some("Success"));
            assert_eq!(got[1].event(), Some("Hangup"));
            assert_eq!(got[2].get("AccountCode"), Some(""));
            assert_eq!(got[2].value("AccountCode"), None);
        }
    }

    #[test]
    fn framing_refuses_what_is_not_ami() {
        let mut f = Framer::default();
        f.push(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(f.banner().is_err());
        let mut f = Framer::default();
        f.push(b"Asterisk Call Manager/2.10.4\r\n");
        assert!(f.banner().is_ok_and(|b| b.is_some()));
        f.push(&vec![b'x'; MAX_PACKET + 10]);
        assert!(f.next_packet().is_err());
    }

    #[test]
    fn actions_refuse_line_breaks() {
        assert_eq!(
            action("Ping", &[("ActionID", "1")]).ok().as_deref(),
            Some("Action: Ping\r\nActionID: 1\r\n\r\n")
        );
        assert!(action("Login", &[("Secret", "a\r\nAction: Originate")]).is_err());
    }

    #[test]
    fn peers_and_extensions() {
        assert_eq!(channel_peer("PJSIP/101-00000002"), Some("101"));
        assert_eq!(channel_peer("SIP/trunk-out-0000ab"), Some("trunk-out"));
        assert_eq!(channel_peer("Local/102@from-queue-00000001;2"), Some("102"));
        assert_eq!(channel_peer("junk"), None);
        assert!(is_extension("101") && !is_extension("89161112233") && !is_extension("s"));
    }

    fn region() -> Region {
        Region::parse("RU").unwrap_or_else(|e| panic!("{e}"))
    }

    fn newchannel(uid: &str, lid: &str, caller: &str, exten: &str, ts: &str) -> Packet {
        pk(&[
            ("Event", "Newchannel"),
            ("Privilege", "call,all"),
            ("Timestamp", ts),
            ("Channel", "PJSIP/trunk-00000001"),
            ("CallerIDNum", caller),
            ("Context", "from-pstn"),
            ("Exten", exten),
            ("Uniqueid", uid),
            ("Linkedid", lid),
        ])
    }

    #[test]
    fn a_call_from_its_events() {
        let mut t = Tracker::new(region(), None);
        let o = t.feed(
            &newchannel("1.1", "1.1", "89161112233", "74952000050", "100.000"),
            1,
        );
        assert_eq!(o.len(), 1);
        assert_eq!(
            (
                o[0].kind,
                o[0].from.as_str(),
                o[0].to.as_str(),
                o[0].started_at
            ),
            (
                CallEventKind::Started,
                "+79161112233",
                "+74952000050",
                100_000
            )
        );
        assert!(t
            .feed(&newchannel("1.2", "1.1", "101", "s", "101.000"), 1)
            .is_empty());
        let o = t.feed(
            &pk(&[
                ("Event", "DialEnd"),
                ("Timestamp", "110.5"),
                ("Linkedid", "1.1"),
                ("DestChannel", "PJSIP/101-00000002"),
                ("DestCallerIDNum", "101"),
                ("DialStatus", "ANSWER"),
            ]),
            1,
        );
        assert_eq!(
            (o[0].kind, o[0].answered_at, o[0].agent.as_deref()),
            (CallEventKind::Answered, Some(110_500), Some("101"))
        );
        assert!(t
            .feed(
                &pk(&[
                    ("Event", "Hangup"),
                    ("Timestamp", "200"),
                    ("Uniqueid", "1.2"),
                    ("Linkedid", "1.1")
                ]),
                1
            )
            .is_empty());
        let o = t.feed(
            &pk(&[
                ("Event", "Hangup"),
                ("Timestamp", "200"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
            ]),
            1,
        );
        assert_eq!(
            (o[0].kind, o[0].status.as_deref(), o[0].ended_at),
            (CallEventKind::Ended, Some("answered"), Some(200_000))
        );
        let o = t.feed(
            &pk(&[
                ("Event", "Cdr"),
                ("UniqueID", "1.1"),
                ("Disposition", "ANSWERED"),
                ("Duration", "100"),
                ("BillableSeconds", "89"),
            ]),
            201_000,
        );
        assert_eq!(
            (o[0].status.as_deref(), o[0].ended_at),
            (Some("answered"), Some(200_000))
        );
        t.sweep(201_000 + KEEP_ENDED_MS + 1);
        assert!(t.is_empty());
    }

    #[test]
    fn internal_calls_are_skipped_and_ivr_answers_are_not_people() {
        let mut t = Tracker::new(region(), None);
        assert!(t
            .feed(&newchannel("2.1", "2.1", "102", "103", "1"), 1)
            .is_empty());
        assert!(t
            .feed(&newchannel("3.1", "3.1", "101", "89160000000", "1"), 1)
            .is_empty());
        assert!(t
            .feed(
                &pk(&[
                    ("Event", "Hangup"),
                    ("Uniqueid", "3.1"),
                    ("Linkedid", "3.1")
                ]),
                5
            )
            .is_empty());
        // Inbound, the IVR answers, a dial to 101 gets no answer, the Cdr says ANSWERED.
        assert_eq!(
            t.feed(
                &newchannel("4.1", "4.1", "+79161112233", "74952000050", "1"),
                1
            )
            .len(),
            1
        );
        t.feed(
            &pk(&[
                ("Event", "DialEnd"),
                ("Linkedid", "4.1"),
                ("DestChannel", "PJSIP/101-1"),
                ("DialStatus", "NOANSWER"),
            ]),
            2,
        );
        let o = t.feed(
            &pk(&[
                ("Event", "Hangup"),
                ("Uniqueid", "4.1"),
                ("Linkedid", "4.1"),
            ]),
            3,
        );
        assert_eq!(o[0].status.as_deref(), Some("missed"));
        let o = t.feed(
            &pk(&[
                ("Event", "Cdr"),
                ("UniqueID", "4.1"),
                ("Disposition", "ANSWERED"),
                ("LastApplication", "VoiceMail"),
            ]),
            4,
        );
        assert_eq!(o[0].status.as_deref(), Some("voicemail"));
    }

    #[test]
    fn the_did_variable_and_a_cdr_alone() {
        let mut t = Tracker::new(region(), Some("__FROM_DID".into()));
        assert!(t
            .feed(&newchannel("5.1", "5.1", "89161112233", "s", "1"), 1)
            .is_empty());
        let o = t.feed(
            &pk(&[
                ("Event", "VarSet"),
                ("Uniqueid", "5.1"),
                ("Linkedid", "5.1"),
                ("Variable", "__FROM_DID"),
                ("Value", "84952000050"),
            ]),
            2,
        );
        assert_eq!(o[0].to, "+74952000050");
        // The client was away for the whole call: its Cdr makes it.
        let o = t.feed(
            &pk(&[
                ("Event", "Cdr"),
                ("Source", "89162223344"),
                ("Destination", "74952000051"),
                ("UniqueID", "6.1"),
                ("Disposition", "ANSWERED"),
                ("Duration", "60"),
                ("BillableSeconds", "50"),
            ]),
            100_000,
        );
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].kind, o[0].started_at),
            (CallEventKind::Started, 40_000)
        );
        assert_eq!(
            (o[1].status.as_deref(), o[1].answered_at, o[1].ended_at),
            (Some("answered"), Some(50_000), Some(100_000))
        );
    }
}
