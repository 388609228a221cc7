//! `geoip_db`: a configured city database that cannot be opened stops start-up.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

#[path = "../../server/tests/support/mmdb.rs"]
mod mmdb;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_calltrail");

fn calltrail(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("CALLTRAIL_DATABASE_URL")
        .env_remove("CALLTRAIL_GEOIP_DB")
        .env_remove("RUST_LOG")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    c
}

/// Runs to the end (it must fail); returns stderr.
fn fails(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

#[test]
fn a_missing_or_bad_city_database_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = calltrail(dir.path());
    cmd.env("CALLTRAIL_GEOIP_DB", "/nonexistent/GeoLite2-City.mmdb");
    let err = fails(cmd);
    assert!(
        err.starts_with("error: geoip_db: cannot read /nonexistent/GeoLite2-City.mmdb"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing may start before the database opens"
    );

    std::fs::write(dir.path().join("bad.mmdb"), "not a database").unwrap();
    std::fs::write(
        dir.path().join("calltrail.toml"),
        "geoip_db = \"bad.mmdb\"\n",
    )
    .unwrap();
    let err = fails(calltrail(dir.path()));
    assert!(
        err.starts_with("error: geoip_db: bad.mmdb is not a MaxMind DB (.mmdb) file"),
        "{err}"
    );
}

#[test]
fn a_city_database_is_loaded_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = mmdb::Writer::new("GeoLite2-City", &["en", "ru"]);
    w.insert(
        "198.51.100.0/24",
        &mmdb::geoip2_city(524_901, &[("en", "Moscow"), ("ru", "Москва")], "RU"),
    );
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, w.finish()).unwrap();
    let mut child = calltrail(dir.path())
        .env("CALLTRAIL_GEOIP_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        line.starts_with("calltrail listening on http://"),
        "{line:?}"
    );
}
