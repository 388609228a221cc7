//! What the load generator's programs share: the benchmark sites they set up.

use anyhow::Context as _;
use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec};
use calltrail_core::Region;
use calltrail_store::tracking::{self, VisitRequest};
use calltrail_store::Store;

/// The User-Agent every benchmark visitor sends (a desktop Chrome).
pub const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
/// The number printed on the benchmark sites, which the script replaces.
pub const SITE_NUMBER: &str = "+74951234567";
/// The fallback number of the first benchmark site (pool dry, next page, ping).
pub const FALLBACK: &str = "+74959999999";
/// The fallback number of a second site (a number serves one site): the load generator's
/// fresh-number row, visit_cost's server phase.
pub const FRESH_FALLBACK: &str = "+74959999998";
/// The fallback number of the returning-number site.
pub const RETURNING_FALLBACK: &str = "+74959999997";
/// The fallback numbers of the three sites share these digits, which no pool number has.
const FALLBACK_DIGITS: &str = "\"number\":\"+749599999";

/// A visit answer that shows a fallback number. A substring search: a byte-by-byte window
/// scan took about as long as the rest of the load generator's work on a visit.
pub fn shows_fallback(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|b| b.contains(FALLBACK_DIGITS))
}

/// How long before the run a returning site's numbers were last shown: their 15 min hold is
/// long over.
pub const RETURNING_AGO_MS: i64 = 2 * 3600 * 1000;

/// An account, a site on bench.example, a pool of `n` numbers from `+7495` `first` on, and
/// its fallback; the site's public key.
pub async fn setup_site(
    store: &Store,
    n: usize,
    first: usize,
    fallback: &str,
) -> anyhow::Result<String> {
    let region = Region::parse("RU").map_err(|e| anyhow::anyhow!("{e}"))?;
    let account = store.create_account("Bench").await?;
    let domains = vec!["bench.example".to_owned()];
    let numbers = vec![SITE_NUMBER.to_owned()];
    let spec = SiteSpec::parse(&SiteInput {
        name: "Bench",
        domains: &domains,
        timezone: "Europe/Moscow",
        default_region: "RU",
        site_numbers: &numbers,
        forward_to: Some("+74951112233"),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let site = store.create_site(&account.id, &spec).await?;
    let pool_spec =
        PoolSpec::parse("Web", Some(15), Some("fallback")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool = store.create_pool(&account.id, &site.id, &pool_spec).await?;
    for i in 0..n {
        let spec = NumberSpec::parse(
            &format!("+7495{:07}", first + i),
            region,
            "pool",
            Some(&pool.id),
            None,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        store.create_number(&account.id, &site.id, &spec).await?;
    }
    let spec = NumberSpec::parse(fallback, region, "fallback", Some(&pool.id), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.create_number(&account.id, &site.id, &spec).await?;
    Ok(site.public_key)
}

/// Show each of the site's `n` pool numbers to a new visitor [`RETURNING_AGO_MS`] ago,
/// through the store as page loads then would have been (in batches, a millisecond apart):
/// their holds ran out long before the run.
pub async fn lease_long_ago(store: &Store, key: &str, n: usize) -> anyhow::Result<()> {
    let ctx = store
        .site_context(key)
        .await?
        .context("the returning-number site")?;
    let req = VisitRequest {
        url: "https://bench.example/sofas?utm_source=google&utm_medium=cpc".to_owned(),
        user_agent: Some(UA.to_owned()),
        ..VisitRequest::default()
    };
    let at = jiff::Timestamp::now().as_millisecond() - RETURNING_AGO_MS;
    let mut leased = 0;
    for (i, start) in (0..n).step_by(256).enumerate() {
        let batch: Vec<_> = (start..n.min(start + 256))
            .map(|_| tracking::new_session(&ctx, &req))
            .collect();
        let shown = store.open_sessions(&batch, at + i as i64).await?;
        leased += shown.iter().filter(|s| s.hold_ms.is_some()).count();
    }
    if leased != n {
        anyhow::bail!("showing the returning site's numbers leased {leased} of {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_any_sites_fallback_number_are_counted() {
        let answer = |number: &str| {
            format!(
                r#"{{"visitor_id":"v","session_id":"s","numbers":[{{"replaces":"{SITE_NUMBER}","number":"{number}","display":"x"}}],"track_code":"12345","ping_s":30}}"#
            )
        };
        for fallback in [FALLBACK, FRESH_FALLBACK, RETURNING_FALLBACK] {
            assert!(shows_fallback(answer(fallback).as_bytes()), "{fallback}");
        }
        for pool in ["+74953000000", "+74955019999", "+74957000999"] {
            assert!(!shows_fallback(answer(pool).as_bytes()), "{pool}");
        }
        assert!(!shows_fallback(b"{\"numbers\":[],\"ping_s\":30}"));
    }
}
