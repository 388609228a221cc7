//! The `calltrail` binary as a new user runs it.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_calltrail");

fn calltrail(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("CALLTRAIL_DATABASE_URL")
        .env_remove("RUST_LOG");
    c
}

/// Start `calltrail serve` on a free port; return the child and its base URL.
fn serve(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("calltrail did not stop on SIGTERM");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("calltrail "));
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["admin", "create-account", "--help"],
        &["migrate", "--help"],
    ] {
        let out = Command::new(BIN).args(sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
    }
}

#[test]
fn serve_creates_sqlite_under_data_and_answers_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = serve(calltrail(dir.path()));
    assert_eq!(get(&format!("{url}/healthz")).0, 200);
    assert_eq!(get(&format!("{url}/readyz")), (200, "ready\n".to_owned()));
    assert!(
        dir.path().join("data/calltrail.db").is_file(),
        "no ./data/calltrail.db"
    );
    assert!(stop(child).success(), "SIGTERM must end calltrail cleanly");
}

/// A stop sent the moment calltrail says it listens still ends it cleanly: the signal
/// handlers are in place before that line is printed.
#[test]
fn sigterm_right_after_start_ends_calltrail_cleanly() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (child, _) = serve(calltrail(dir.path()));
        assert!(
            stop(child).success(),
            "SIGTERM at start-up must end calltrail cleanly"
        );
    }
}

#[test]
fn create_account_json_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = calltrail(dir.path())
        .args(["admin", "create-account", "Acme", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["account_id", "token"]);
    let account = v["account_id"].as_str().unwrap();
    let out = calltrail(dir.path())
        .args(["admin", "create-token", "--account", account, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(t["token"], v["token"]);
    // An unknown account is one clear line and a non-zero exit.
    let out = calltrail(dir.path())
        .args(["admin", "create-token", "--account", "missing"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: account not found"), "{err}");
}

#[test]
fn config_layers_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("calltrail.toml"),
        "listen = \"127.0.0.1:9100\"\n",
    )
    .unwrap();
    let out = calltrail(dir.path())
        .arg("config")
        .env(
            "CALLTRAIL_DATABASE_URL",
            "postgres://ct:secret@db.internal/ct",
        )
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("listen = \"127.0.0.1:9100\""), "{s}");
    assert!(s.contains("postgres://ct:***@db.internal/ct"), "{s}");
    assert!(!s.contains("secret"), "{s}");
    let out = calltrail(dir.path())
        .args(["config", "--listen", "127.0.0.1:9200"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9200"));
    let out = calltrail(dir.path())
        .arg("migrate")
        .env("CALLTRAIL_DATABASE_URL", "mysql://x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database_url"));
}

/// The same binary on PostgreSQL, when the test database is configured.
#[test]
fn serve_on_postgres() {
    let Ok(base) = std::env::var("CALLTRAIL_TEST_DATABASE_URL") else {
        eprintln!("CALLTRAIL_TEST_DATABASE_URL not set: PostgreSQL case skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = calltrail(dir.path())
        .arg("migrate")
        .env("CALLTRAIL_DATABASE_URL", &base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgres"));
    let mut cmd = calltrail(dir.path());
    cmd.env("CALLTRAIL_DATABASE_URL", &base);
    let (child, url) = serve(cmd);
    assert_eq!(get(&format!("{url}/readyz")).0, 200);
    assert!(
        !dir.path().join("data").exists(),
        "PostgreSQL mode must not create an SQLite file"
    );
    assert!(stop(child).success());
}

/// Two calltrail processes on one PostgreSQL database, hit concurrently, never lease one
/// number to two visitors.
#[test]
fn two_nodes_on_postgres_never_lease_one_number_twice() {
    use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec};
    if std::env::var(calltrail_store::testing::ENV).is_err() {
        eprintln!("CALLTRAIL_TEST_DATABASE_URL not set: PostgreSQL case skipped");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(calltrail_store::testing::postgres()).unwrap();
    let ru = calltrail_core::Region::parse("RU").unwrap();
    let key = rt.block_on(async {
        let s = &db.store;
        let acc = s.create_account("two nodes").await.unwrap();
        let domains = vec!["shop.example".to_owned()];
        let nums = vec!["+74951234567".to_owned()];
        let site = s
            .create_site(
                &acc.id,
                &SiteSpec::parse(&SiteInput {
                    name: "S",
                    domains: &domains,
                    timezone: "UTC",
                    default_region: "RU",
                    site_numbers: &nums,
                    forward_to: None,
                })
                .unwrap(),
            )
            .await
            .unwrap();
        let pool = s
            .create_pool(
                &acc.id,
                &site.id,
                &PoolSpec::parse("P", Some(30), Some("fallback")).unwrap(),
            )
            .await
            .unwrap();
        for i in 1..=6 {
            s.create_number(
                &acc.id,
                &site.id,
                &NumberSpec::parse(
                    &format!("+749540000{i:02}"),
                    ru,
                    "pool",
                    Some(&pool.id),
                    None,
                )
                .unwrap(),
            )
            .await
            .unwrap();
        }
        s.create_number(
            &acc.id,
            &site.id,
            &NumberSpec::parse("+74954000099", ru, "fallback", Some(&pool.id), None).unwrap(),
        )
        .await
        .unwrap();
        site.public_key
    });
    let dir = tempfile::tempdir().unwrap();
    let node = || {
        let mut c = calltrail(dir.path());
        c.env("CALLTRAIL_DATABASE_URL", &db.url);
        serve(c)
    };
    let (a, url_a) = node();
    let (b, url_b) = node();
    let answers: Vec<String> = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let url = if i % 2 == 0 {
                url_a.clone()
            } else {
                url_b.clone()
            };
            let http = http.clone();
            let body =
                serde_json::json!({"site_key": key, "url": format!("https://shop.example/?v={i}")})
                    .to_string();
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/t/v1/visit"))
                    .header("origin", "https://shop.example")
                    .header("user-agent", "Mozilla/5.0 (Windows NT 10.0) Chrome/120.0")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.unwrap();
                v["numbers"][0]["number"].as_str().unwrap().to_owned()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(stop(a).success());
    assert!(stop(b).success());
    let mut pool_numbers: Vec<&String> = answers
        .iter()
        .filter(|n| n.as_str() != "+74954000099")
        .collect();
    pool_numbers.sort();
    let before = pool_numbers.len();
    pool_numbers.dedup();
    assert_eq!(
        before,
        pool_numbers.len(),
        "a pool number went to two live visitors: {answers:?}"
    );
    assert_eq!(
        pool_numbers.len(),
        6,
        "all six numbers are given before the fallback: {answers:?}"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|n| n.as_str() == "+74954000099")
            .count(),
        34
    );
    rt.block_on(db.cleanup());
}

/// A burst of call webhooks, `kill -9` in the middle of it: every webhook answered 2xx
/// is there after a restart.
#[test]
fn kill_9_during_a_webhook_burst_loses_no_acknowledged_call() {
    use calltrail_server::hooks::generic::{sign, SIGNATURE_HEADER};
    let dir = tempfile::tempdir().unwrap();
    let out = calltrail(dir.path())
        .args(["admin", "create-account", "Acme", "--json"])
        .output()
        .unwrap();
    let acc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = acc["token"].as_str().unwrap().to_owned();
    let (child, url) = serve(calltrail(dir.path()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let (hook, secret) = rt.block_on(async {
        let site: serde_json::Value = http
            .post(format!("{url}/api/v1/sites"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "S", "domains": ["shop.example"], "timezone": "UTC", "default_region": "RU"}))
            .send().await.unwrap().json().await.unwrap();
        let sid = site["id"].as_str().unwrap();
        let conn: serde_json::Value = http
            .post(format!("{url}/api/v1/sites/{sid}/telephony"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"provider": "generic"}))
            .send().await.unwrap().json().await.unwrap();
        (conn["webhook_url"].as_str().unwrap().to_owned(), conn["secret"].as_str().unwrap().to_owned())
    });
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let pid = child.id();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (http, hook, secret, acked) = (http.clone(), hook.clone(), secret.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    let body = serde_json::json!({"event": "call.ended", "call_id": format!("w{w}-{i}"), "from": "+79160000000", "to": "+74951234567"}).to_string();
                    let res = http.post(&hook).header(SIGNATURE_HEADER, sign(&secret, body.as_bytes())).header("content-type", "application/json").body(body).send().await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if let Some(id) = v["call_id"].as_str() {
                                acked.lock().unwrap().push(id.to_owned());
                            }
                        }
                        _ => break,
                    }
                }
            }));
        }
        // Let some land, then kill the server without warning.
        while acked.lock().unwrap().len() < 60 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut child = child;
    let _ = child.wait();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 60 && acked.len() < 800,
        "the kill landed mid-burst: {} acknowledged",
        acked.len()
    );
    let (child, url) = serve(calltrail(dir.path()));
    let missing: Vec<String> = rt.block_on(async {
        let mut missing = Vec::new();
        for id in &acked {
            let r = http
                .get(format!("{url}/api/v1/calls/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if r.status() != 200 {
                missing.push(id.clone());
            }
        }
        missing
    });
    assert!(stop(child).success());
    assert!(
        missing.is_empty(),
        "{} acknowledged calls lost after kill -9: {missing:?}",
        missing.len()
    );
}

#[test]
fn simulate_call_attributes_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let out = calltrail(dir.path())
        .args(["admin", "create-account", "Acme", "--json"])
        .output()
        .unwrap();
    let acc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (child, url) = serve(calltrail(dir.path()));
    let sid = rt.block_on(async {
        let http = reqwest::Client::new();
        let tok = acc["token"].as_str().unwrap();
        let site: serde_json::Value = http
            .post(format!("{url}/api/v1/sites"))
            .bearer_auth(tok)
            .json(&serde_json::json!({"name": "S", "domains": ["shop.example"], "timezone": "UTC", "default_region": "RU"}))
            .send().await.unwrap().json().await.unwrap();
        let sid = site["id"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{url}/api/v1/sites/{sid}/numbers"))
            .bearer_auth(tok)
            .json(&serde_json::json!({"number": "8 495 300-00-01", "kind": "static", "source": "billboard"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 201);
        sid
    });
    assert!(stop(child).success());
    let out = calltrail(dir.path())
        .args([
            "admin",
            "simulate-call",
            "--site",
            &sid,
            "--to",
            "8 495 300-00-01",
            "--from",
            "8 916 000 00 00",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let call: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            call["method"].as_str(),
            call["source"].as_str(),
            call["caller"].as_str()
        ),
        (Some("static"), Some("billboard"), Some("+79160000000"))
    );
    assert_eq!(call["talk_seconds"], 60);
    let out = calltrail(dir.path())
        .args(["admin", "simulate-call", "--site", &sid, "--to", "hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --to:"));
    let out = calltrail(dir.path())
        .args([
            "admin",
            "simulate-call",
            "--site",
            "nope",
            "--to",
            "+74953000001",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no site with id"));
}
