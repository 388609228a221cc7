//! `calltrail simulate` as a user runs it: good scenarios give results, bad ones one clear
//! line naming the key.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_calltrail");

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn simulate(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("CALLTRAIL_DATABASE_URL")
        .env_remove("CALLTRAIL_CONFIG")
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

fn tiny() -> String {
    scenarios().join("tiny.toml").display().to_string()
}

#[test]
fn json_results_carry_every_metric() {
    let out = simulate(&["--scenario", &tiny(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        for key in [
            "session_accuracy",
            "in_window_session_accuracy",
            "source_accuracy",
            "high_confidence_share",
            "high_confidence_precision",
            "exhausted_visit_share",
        ] {
            let x = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        }
        assert!(r["calls"].as_u64().unwrap() > 0);
        assert!(r["peak_numbers_in_use"].as_f64().unwrap() > 0.0);
        assert!(r["strategy"].is_string());
    }
    assert!(v["scenario"]["sizing"][0]["erlang_b"].as_u64().unwrap() >= 1);
    // Same seed, same answer.
    let again = simulate(&["--scenario", &tiny(), "--format", "json"]);
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn the_table_names_the_strategies() {
    let out = simulate(&["--scenario", &tiny()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("in-window"), "{text}");
    assert!(text.contains("calltrail-fallback"), "{text}");
    assert!(text.contains("Erlang B"), "{text}");
}

#[test]
fn size_for_finds_a_pool() {
    let out = simulate(&[
        "--scenario",
        &tiny(),
        "--format",
        "json",
        "--size-for",
        "0.9",
        "--strategy",
        "calltrail",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sizes = v["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    for s in sizes {
        let n = s["numbers"].as_u64().unwrap();
        assert!(n >= 1);
        assert!(s["report"]["in_window_session_accuracy"].as_f64().unwrap() >= 0.9);
    }
}

fn bad(toml: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let out = simulate(&["--scenario", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{toml}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{e:?} in {err}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_scenarios_name_the_key_and_the_problem() {
    bad(
        "[[pools]]\nstrategy = \"magic\"\n",
        &["pools[0].strategy", "magic"],
    );
    bad("days = \"seven\"\n", &["`days`", "invalid type"]);
    bad("visitors_per_day = -3\n", &["visitors_per_day", "positive"]);
    bad(
        "hourly_profile = [1, 2, 3]\n",
        &["hourly_profile", "24 values"],
    );
    bad("bot_share = 2\n", &["bot_share", "between 0 and 1"]);
    bad("colour = \"blue\"\n", &["colour"]);
    bad(
        "[[pools]]\nnumbers = 0\n",
        &["pools[0].numbers", "between 1 and"],
    );
    bad(
        "[[pools]]\nhold_minutes = 5000\n",
        &["pools[0].hold_minutes"],
    );
    bad(
        "[[pools]]\non_exhaustion = \"panic\"\n",
        &["pools[0].on_exhaustion", "fallback or reuse"],
    );
    bad(
        "[[calls.delay]]\nshare = 0.5\nmin_minutes = 10\n",
        &["calls.delay[0].max_minutes"],
    );
    bad(
        "[session]\nmedian_minutes = 20\np90_minutes = 10\n",
        &["session.p90_minutes", "median"],
    );
    bad(
        "[[sources]]\nname = \"Google\"\nshare = 1\n",
        &["sources[0].name"],
    );
    bad("days = [\n", &["bad.toml", "line"]);
}

#[test]
fn bad_flags_and_missing_files() {
    let out = simulate(&["--scenario", "/nonexistent/x.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read scenario"));
    let out = simulate(&["--scenario", &tiny(), "--size-for", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size-for"));
    let out = simulate(&["--scenario", &tiny(), "--numbers", "many"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--numbers"));
}
