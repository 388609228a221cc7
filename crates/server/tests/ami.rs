//! The Asterisk AMI client against a scripted AMI peer: a TCP listener in this test that
//! speaks the wire protocol as Asterisk does (banner, `Action: Login` checked field by field,
//! `Response: Success|Error`, event packets written in pieces across TCP writes, answers to
//! `Action: Ping`), on each backend. Not a live Asterisk.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use calltrail_server::{ami, AppState, ServerConfig};
use common::{each_backend, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// 2026-11-20T10:00:00Z
const T0: f64 = 1_795_168_800.0;

type Fields = HashMap<String, String>;

/// One side of an AMI link as Asterisk runs it.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// The next packet the client sent (lines up to an empty line), `None` when it hung up.
    async fn packet(&mut self) -> Option<Fields> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
                return Some(
                    text.split("\r\n")
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                );
            }
            let mut b = [0u8; 4096];
            let n = self.stream.read(&mut b).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// Write `text` in uneven pieces, each its own TCP write, so packets and even their
    /// closing `\r\n\r\n` arrive split.
    async fn send_split(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let sizes = [1usize, 7, 64, 3, 200, 2, 31, 1500, 5];
        let (mut at, mut i) = (0, 0);
        while at < bytes.len() {
            let end = (at + sizes[i % sizes.len()]).min(bytes.len());
            self.stream.write_all(&bytes[at..end]).await.unwrap();
            self.stream.flush().await.unwrap();
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            at = end;
            i += 1;
        }
    }
}

enum Cmd {
    Send(String),
    /// Close the connection (a PBX restart, a network loss).
    Drop,
}

/// A scripted AMI server: takes logins with `user`/`secret`, answers Pings, writes what
/// the test tells it.
struct Peer {
    port: u16,
    logins: mpsc::UnboundedReceiver<Fields>,
    /// A message each time the client hangs up.
    hangups: mpsc::UnboundedReceiver<()>,
    cmds: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    async fn start(user: &'static str, secret: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (login_tx, logins) = mpsc::unbounded_channel();
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (hangup_tx, hangups) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut w = Wire {
                    stream,
                    buf: Vec::new(),
                };
                w.stream
                    .write_all(b"Asterisk Call Manager/5.0.1\r\n")
                    .await
                    .unwrap();
                let Some(login) = w.packet().await else {
                    continue;
                };
                let ok = login.get("Action").map(String::as_str) == Some("Login")
                    && login.get("Username").map(String::as_str) == Some(user)
                    && login.get("Secret").map(String::as_str) == Some(secret);
                let id = login.get("ActionID").cloned().unwrap_or_default();
                let _ = login_tx.send(login);
                if !ok {
                    // As Asterisk: an error, then the connection is closed.
                    w.send_split(&format!(
                        "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
                    ))
                    .await;
                    continue;
                }
                w.send_split(&format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n\
                     Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 1043\r\nLastReload: 1043\r\nStatus: Fully Booted\r\n\r\n"
                ))
                .await;
                loop {
                    tokio::select! {
                        p = w.packet() => match p {
                            Some(p) if p.get("Action").map(String::as_str) == Some("Ping") => {
                                let id = p.get("ActionID").cloned().unwrap_or_default();
                                w.send_split(&format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1795168800.000000\r\n\r\n")).await;
                            }
                            Some(_) => {}
                            None => {
                                let _ = hangup_tx.send(());
                                break;
                            }
                        },
                        c = cmd_rx.recv() => match c {
                            Some(Cmd::Send(text)) => w.send_split(&text).await,
                            Some(Cmd::Drop) | None => break,
                        },
                    }
                }
            }
        });
        Self {
            port,
            logins,
            hangups,
            cmds,
            task,
        }
    }

    async fn login(&mut self) -> Fields {
        tokio::time::timeout(Duration::from_secs(10), self.logins.recv())
            .await
            .expect("the client logs in within 10 s")
            .unwrap()
    }

    fn send(&self, text: String) {
        self.cmds.send(Cmd::Send(text)).unwrap();
    }
}

fn fast() -> ami::Options {
    ami::Options {
        poll: Duration::from_millis(100),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ping_every: Duration::from_millis(300),
        dead_after: Duration::from_secs(5),
        handshake: Duration::from_secs(5),
    }
}

/// A channel as Asterisk describes one in events (with `prefix` "Dest" for the far side).
struct Chan<'a> {
    name: &'a str,
    num: &'a str,
    context: &'a str,
    exten: &'a str,
    uid: &'a str,
    lid: &'a str,
}

impl Chan<'_> {
    fn lines(&self, prefix: &str, state: &str) -> String {
        let (code, desc) = match state {
            "Up" => ("6", "Up"),
            "Ringing" => ("5", "Ringing"),
            "Ring" => ("4", "Ring"),
            _ => ("0", "Down"),
        };
        format!(
            "{prefix}Channel: {}\r\n{prefix}ChannelState: {code}\r\n{prefix}ChannelStateDesc: {desc}\r\n\
             {prefix}CallerIDNum: {}\r\n{prefix}CallerIDName: <unknown>\r\n{prefix}ConnectedLineNum: <unknown>\r\n\
             {prefix}ConnectedLineName: <unknown>\r\n{prefix}Language: ru\r\n{prefix}AccountCode: \r\n\
             {prefix}Context: {}\r\n{prefix}Exten: {}\r\n{prefix}Priority: 1\r\n{prefix}Uniqueid: {}\r\n{prefix}Linkedid: {}\r\n",
            self.name, self.num, self.context, self.exten, self.uid, self.lid
        )
    }
}

fn event(name: &str, class: &str, secs: f64, body: &str) -> String {
    format!(
        "Event: {name}\r\nPrivilege: {class},all\r\nTimestamp: {:.6}\r\n{body}\r\n",
        T0 + secs
    )
}

fn local_time(secs: f64) -> String {
    // Asterisk writes Cdr times in the PBX's local time; calltrail does not read them.
    let t = jiff::Timestamp::from_second((T0 + secs) as i64).unwrap();
    t.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(3)))
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A whole inbound call as Asterisk reports it: the trunk channel, a ring group dialling
/// `agents`, `answer` (the one who answers, if any) or every dial ending with `status`,
/// hangups and the Cdr.
#[allow(clippy::too_many_arguments)]
fn inbound(
    seq: u32,
    at: f64,
    caller: &str,
    did: &str,
    agents: &[&str],
    answer: Option<&str>,
    status: &str,
    talk: f64,
) -> String {
    let lid = format!("{:.0}.{seq}", T0 + at);
    let trunk_name = format!("PJSIP/trunk-{seq:08x}");
    let trunk = Chan {
        name: &trunk_name,
        num: caller,
        context: "from-pstn",
        exten: did,
        uid: &lid,
        lid: &lid,
    };
    let mut s = event("Newchannel", "call", at, &trunk.lines("", "Ring"));
    s += &event(
        "VarSet",
        "dialplan",
        at,
        &format!(
            "{}Variable: __FROM_DID\r\nValue: {did}\r\n",
            trunk.lines("", "Ring")
        ),
    );
    s += &event(
        "Newexten",
        "dialplan",
        at,
        &format!(
            "{}Extension: {did}\r\nApplication: Set\r\nAppData: __FROM_DID={did}\r\n",
            trunk.lines("", "Ring")
        ),
    );
    let ring = at + 1.0;
    let rang = if answer.is_some() {
        at + 12.0
    } else {
        at + 25.0
    };
    let end = rang + talk;
    let legs: Vec<(String, String, &str)> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                format!("PJSIP/{a}-{:08x}", seq * 10 + i as u32),
                format!("{lid}{i}"),
                *a,
            )
        })
        .collect();
    for (name, uid, a) in &legs {
        let leg = Chan {
            name,
            num: a,
            context: "from-internal",
            exten: a,
            uid,
            lid: &lid,
        };
        s += &event("Newchannel", "call", ring, &leg.lines("", "Down"));
        s += &event(
            "DialBegin",
            "call",
            ring,
            &format!(
                "{}{}DialString: {a}\r\n",
                trunk.lines("", "Ring"),
                leg.lines("Dest", "Down")
            ),
        );
        s += &event(
            "DialState",
            "call",
            ring,
            &format!(
                "{}{}DialStatus: RINGING\r\n",
                trunk.lines("", "Ring"),
                leg.lines("Dest", "Ringing")
            ),
        );
    }
    for (name, uid, a) in &legs {
        let leg = Chan {
            name,
            num: a,
            context: "from-internal",
            exten: a,
            uid,
            lid: &lid,
        };
        let st = match answer {
            Some(x) if x == *a => "ANSWER",
            Some(_) => "CANCEL",
            None => status,
        };
        s += &event(
            "DialEnd",
            "call",
            rang,
            &format!(
                "{}{}DialStatus: {st}\r\n",
                trunk.lines("", "Ring"),
                leg.lines("Dest", if st == "ANSWER" { "Up" } else { "Ringing" })
            ),
        );
        if st != "ANSWER" {
            s += &event(
                "Hangup",
                "call",
                rang,
                &format!(
                    "{}Cause: 26\r\nCause-txt: Answered elsewhere\r\n",
                    leg.lines("", "Ringing")
                ),
            );
        }
    }
    if answer.is_some() {
        s += &event(
            "BridgeEnter",
            "call",
            rang,
            &format!(
                "BridgeUniqueid: b-{seq}\r\nBridgeType: basic\r\n{}",
                trunk.lines("", "Up")
            ),
        );
        s += &event(
            "RTCPSent",
            "reporting",
            rang + 5.0,
            &format!("{}SSRC: 0x1\r\nPT: 200(SR)\r\n", trunk.lines("", "Up")),
        );
    }
    for (name, uid, a) in &legs {
        if answer == Some(*a) {
            let leg = Chan {
                name,
                num: a,
                context: "from-internal",
                exten: a,
                uid,
                lid: &lid,
            };
            s += &event(
                "Hangup",
                "call",
                end,
                &format!(
                    "{}Cause: 16\r\nCause-txt: Normal Clearing\r\n",
                    leg.lines("", "Up")
                ),
            );
        }
    }
    s += &event(
        "Hangup",
        "call",
        end,
        &format!(
            "{}Cause: 16\r\nCause-txt: Normal Clearing\r\n",
            trunk.lines("", "Up")
        ),
    );
    let (disp, bill) = match answer {
        Some(_) => ("ANSWERED", talk),
        None if status == "BUSY" => ("BUSY", 0.0),
        None => ("NO ANSWER", 0.0),
    };
    let dst_chan = legs.first().map_or(String::new(), |l| l.0.clone());
    let mut cdr = String::new();
    let _ = write!(
        cdr,
        "AccountCode: \r\nSource: {caller}\r\nDestination: {did}\r\nDestinationContext: from-pstn\r\nCallerID: \"\" <{caller}>\r\n\
         Channel: {trunk_name}\r\nDestinationChannel: {dst_chan}\r\nLastApplication: Dial\r\nLastData: PJSIP/101&PJSIP/102,20\r\n\
         StartTime: {}\r\nAnswerTime: {}\r\nEndTime: {}\r\nDuration: {:.0}\r\nBillableSeconds: {bill:.0}\r\nDisposition: {disp}\r\n\
         AMAFlags: DOCUMENTATION\r\nUniqueID: {lid}\r\nUserField: \r\n",
        local_time(at),
        if answer.is_some() { local_time(rang) } else { String::new() },
        local_time(end),
        end - at,
    );
    s += &event("Cdr", "cdr", end, &cdr);
    s
}

/// An internal call, extension 102 to 103: not a call to the business.
fn internal(at: f64) -> String {
    let lid = format!("{:.0}.900", T0 + at);
    let a = Chan {
        name: "PJSIP/102-00000900",
        num: "102",
        context: "from-internal",
        exten: "103",
        uid: &lid,
        lid: &lid,
    };
    let uid_b = format!("{lid}1");
    let b = Chan {
        name: "PJSIP/103-00000901",
        num: "103",
        context: "from-internal",
        exten: "103",
        uid: &uid_b,
        lid: &lid,
    };
    let mut s = event("Newchannel", "call", at, &a.lines("", "Ring"));
    s += &event("Newchannel", "call", at, &b.lines("", "Down"));
    s += &event(
        "DialBegin",
        "call",
        at,
        &format!(
            "{}{}DialString: 103\r\n",
            a.lines("", "Ring"),
            b.lines("Dest", "Down")
        ),
    );
    s += &event(
        "DialEnd",
        "call",
        at + 3.0,
        &format!(
            "{}{}DialStatus: ANSWER\r\n",
            a.lines("", "Ring"),
            b.lines("Dest", "Up")
        ),
    );
    s += &event(
        "Hangup",
        "call",
        at + 30.0,
        &format!(
            "{}Cause: 16\r\nCause-txt: Normal Clearing\r\n",
            b.lines("", "Up")
        ),
    );
    s += &event(
        "Hangup",
        "call",
        at + 30.0,
        &format!(
            "{}Cause: 16\r\nCause-txt: Normal Clearing\r\n",
            a.lines("", "Up")
        ),
    );
    s += &event("Cdr", "cdr", at + 30.0, &format!("AccountCode: \r\nSource: 102\r\nDestination: 103\r\nDisposition: ANSWERED\r\nDuration: 30\r\nBillableSeconds: 27\r\nUniqueID: {lid}\r\n"));
    s
}

fn unrelated() -> String {
    event("PeerStatus", "system", 0.0, "ChannelType: PJSIP\r\nPeer: PJSIP/101\r\nPeerStatus: Reachable\r\n")
        + &event("ContactStatus", "system", 0.0, "URI: sip:101@10.0.0.5:5060\r\nContactStatus: Reachable\r\nAOR: 101\r\nEndpointName: 101\r\nRoundtripUsec: 1532\r\n")
}

async fn calls(srv: &TestServer, tok: &str, sid: &str) -> Vec<Value> {
    let (s, v) = srv
        .call(
            "GET",
            &format!("/api/v1/calls?site_id={sid}&sort=oldest"),
            tok,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Poll the call log until `done` holds, for up to 10 s.
async fn wait_for(
    srv: &TestServer,
    tok: &str,
    sid: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..100 {
        let c = calls(srv, tok, sid).await;
        if done(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "within 10 s: {what}; the calls: {:#?}",
        calls(srv, tok, sid).await
    );
}

async fn setup(srv: &TestServer, secret: &str, port: u16) -> (String, String, String) {
    let (_, tok) = srv.account("A").await;
    let site = srv.create_site(&tok).await;
    let sid = site["id"].as_str().unwrap().to_owned();
    let (s, v) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/numbers"),
            &tok,
            Some(json!({"number": "+74952000050", "kind": "static", "source": "billboard"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/agents"),
            &tok,
            Some(json!({"ext": "101", "name": "Ольга"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, conn) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/telephony"),
            &tok,
            Some(json!({"provider": "asterisk_ami", "secret": secret, "settings": {"host": "127.0.0.1", "port": port, "username": "calltrail"}})),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    assert_eq!(
        conn["webhook_url"],
        Value::Null,
        "AMI is dialled by calltrail: {conn}"
    );
    (tok, sid, conn["id"].as_str().unwrap().to_owned())
}

fn clients(srv: &TestServer) -> tokio::task::JoinHandle<()> {
    ami::spawn_with(
        AppState::new(srv.db.store.clone(), ServerConfig::default()),
        fast(),
    )
}

#[tokio::test]
async fn ami_client_follows_calls_merges_repeats_and_reconnects() {
    each_backend(|srv: TestServer| async move {
        let mut peer = Peer::start("calltrail", "s3cret").await;
        let (tok, sid, conn_id) = setup(&srv, "s3cret", peer.port).await;
        let ami = clients(&srv);
        let login = peer.login().await;
        assert_eq!(login.get("Username").map(String::as_str), Some("calltrail"));
        let events = login.get("Events").cloned().unwrap_or_default();
        assert!(
            events.contains("call") && events.contains("cdr"),
            "{login:?}"
        );
        assert!(login.contains_key("ActionID"), "{login:?}");

        // A: answered by 101 after 12 s, 180 s of talk, while 102 also rang.
        let call_a = inbound(
            1,
            0.0,
            "89161112233",
            "74952000050",
            &["101", "102"],
            Some("101"),
            "",
            180.0,
        );
        // B: to a number that is no tracking number of the site, nobody answers.
        let call_b = inbound(
            2,
            600.0,
            "+79162223344",
            "74959999999",
            &["101"],
            None,
            "NOANSWER",
            0.0,
        );
        peer.send(unrelated() + &internal(300.0) + &call_a + &call_b);
        let got = wait_for(&srv, &tok, &sid, "two ended calls", |c| {
            c.len() == 2
                && c.iter()
                    .all(|c| c["status"] != "ringing" && c["status"] != "in_progress")
        })
        .await;
        let a = &got[0];
        assert_eq!(
            (
                a["status"].as_str(),
                a["wait_seconds"].as_i64(),
                a["talk_seconds"].as_i64()
            ),
            (Some("answered"), Some(12), Some(180)),
            "{a}"
        );
        assert_eq!(
            (a["agent"].as_str(), a["agent_name"].as_str()),
            (Some("101"), Some("Ольга")),
            "{a}"
        );
        assert_eq!(
            (a["caller"].as_str(), a["tracking_number"].as_str()),
            (Some("+79161112233"), Some("+74952000050")),
            "{a}"
        );
        assert_eq!(
            (
                a["method"].as_str(),
                a["source"].as_str(),
                a["provider"].as_str()
            ),
            (Some("static"), Some("billboard"), Some("asterisk_ami")),
            "{a}"
        );
        assert_eq!(
            a["started_at"].as_str(),
            Some("2026-11-20T10:00:00Z"),
            "{a}"
        );
        let a_id = format!("{conn_id}:{T0:.0}.1");
        assert_eq!(a["provider_call_id"].as_str(), Some(a_id.as_str()));
        let b = &got[1];
        assert_eq!(
            (
                b["status"].as_str(),
                b["caller"].as_str(),
                b["tracking_number"].as_str()
            ),
            (Some("missed"), Some("+79162223344"), Some("+74959999999")),
            "{b}"
        );
        assert_eq!(
            (b["method"].as_str(), b["talk_seconds"].as_i64()),
            (Some("unmatched"), Some(0)),
            "{b}"
        );
        let kept = srv
            .db
            .store
            .webhook_count("asterisk_ami", &a_id)
            .await
            .unwrap();
        assert!(kept >= 3, "every event kept: {kept}");

        // The same stream again (a replay, a second manager session): still one call each.
        peer.send(call_a.clone());
        for _ in 0..100 {
            if srv
                .db
                .store
                .webhook_count("asterisk_ami", &a_id)
                .await
                .unwrap()
                > kept
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            srv.db
                .store
                .webhook_count("asterisk_ami", &a_id)
                .await
                .unwrap()
                > kept
        );
        let again = calls(&srv, &tok, &sid).await;
        assert_eq!(again.len(), 2, "{again:#?}");
        assert_eq!(
            (
                again[0]["id"].clone(),
                again[0]["status"].as_str(),
                again[0]["talk_seconds"].as_i64()
            ),
            (a["id"].clone(), Some("answered"), Some(180))
        );

        // The PBX goes away; the client dials again and the next call arrives.
        peer.cmds.send(Cmd::Drop).unwrap();
        let login = peer.login().await;
        assert_eq!(login.get("Secret").map(String::as_str), Some("s3cret"));
        let call_c = inbound(
            3,
            1200.0,
            "8 (916) 333-44-55",
            "74952000050",
            &["101"],
            None,
            "BUSY",
            0.0,
        );
        peer.send(call_c);
        let got = wait_for(&srv, &tok, &sid, "the call after the reconnect", |c| {
            c.len() == 3 && c[2]["status"] == "busy"
        })
        .await;
        assert_eq!(
            (
                got[2]["caller"].as_str(),
                got[2]["method"].as_str(),
                got[2]["agent"].as_str()
            ),
            (Some("+79163334455"), Some("static"), None),
            "{}",
            got[2]
        );

        ami.abort();
        peer.task.abort();
        srv
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_stores_nothing_and_is_tried_again() {
    each_backend(|srv: TestServer| async move {
        let mut peer = Peer::start("calltrail", "right").await;
        let (tok, sid, _) = setup(&srv, "wrong", peer.port).await;
        let ami = clients(&srv);
        for _ in 0..3 {
            let login = peer.login().await;
            assert_eq!(login.get("Secret").map(String::as_str), Some("wrong"));
        }
        // Nothing was sent but a refusal; nothing is stored.
        assert!(calls(&srv, &tok, &sid).await.is_empty());
        ami.abort();
        peer.task.abort();
        srv
    })
    .await;
}

#[tokio::test]
async fn a_connection_created_while_running_is_picked_up_and_a_deleted_one_stopped() {
    each_backend(|srv: TestServer| async move {
        let ami = clients(&srv);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut peer = Peer::start("calltrail", "s3cret").await;
        let (tok, sid, conn_id) = setup(&srv, "s3cret", peer.port).await;
        peer.login().await;
        peer.send(inbound(
            4,
            0.0,
            "89161112233",
            "74952000050",
            &["101"],
            Some("101"),
            "",
            30.0,
        ));
        wait_for(&srv, &tok, &sid, "the call", |c| {
            c.len() == 1 && c[0]["status"] == "answered"
        })
        .await;
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/telephony/{conn_id}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);
        // The client is stopped: the peer sees it hang up, and no login follows.
        tokio::time::timeout(Duration::from_secs(10), peer.hangups.recv())
            .await
            .expect("the client of a deleted connection hangs up within 10 s");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            peer.logins.try_recv().is_err(),
            "no new login after the connection was deleted"
        );
        ami.abort();
        peer.task.abort();
        srv
    })
    .await;
}
