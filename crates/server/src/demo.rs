//! `calltrail demo`: a demo account and site with numbers, rules, a landing page carrying
//! the snippet, and a history of simulated visits and calls run through the real engine.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use calltrail_core::engine::{HOUR, MINUTE};
use calltrail_core::rules::RuleMatch;
use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec, SourceSpec};
use calltrail_core::Region;
use calltrail_store::setup::RuleSpec;
use calltrail_store::tracking::{CallInput, VisitRequest};
use calltrail_store::{Site, Store};
use rand::{Rng, SeedableRng};

use crate::AppState;

pub const DEMO_ACCOUNT: &str = "calltrail demo";

/// What the demo set up, to print.
#[derive(Debug, Clone)]
pub struct Demo {
    pub account_id: String,
    pub token: String,
    pub site: Site,
    pub visits: usize,
    pub calls: usize,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Set up the demo account once (later runs reuse it) and issue a fresh API token.
pub async fn seed(store: &Store, now_ms: i64) -> anyhow::Result<Demo> {
    if let Some(acc) = store.account_by_name(DEMO_ACCOUNT).await? {
        if let Some(site) = store
            .list_sites(&acc.id, None, 1)
            .await?
            .items
            .into_iter()
            .next()
        {
            let (_, token) = store.create_token(&acc.id, "demo").await?;
            return Ok(Demo {
                account_id: acc.id,
                token,
                site,
                visits: 0,
                calls: 0,
            });
        }
    }
    let acc = store.create_account(DEMO_ACCOUNT).await?;
    let (_, token) = store.create_token(&acc.id, "demo").await?;
    let domains = strings(&["localhost", "127.0.0.1"]);
    let site_numbers = strings(&["+7 (495) 123-45-67", "8 800 555-35-35"]);
    let site = store
        .create_site(
            &acc.id,
            &SiteSpec::parse(&SiteInput {
                name: "Demo shop",
                domains: &domains,
                timezone: "Europe/Moscow",
                default_region: "RU",
                site_numbers: &site_numbers,
                forward_to: Some("+7 916 000-00-00"),
            })?,
        )
        .await?;
    let ru = Region::parse("RU")?;
    let pool = store
        .create_pool(
            &acc.id,
            &site.id,
            &PoolSpec::parse("Website visitors", Some(15), Some("fallback"))?,
        )
        .await?;
    for i in 1..=8 {
        let spec = NumberSpec::parse(
            &format!("+7 495 120-00-{i:02}"),
            ru,
            "pool",
            Some(&pool.id),
            None,
        )?;
        store.create_number(&acc.id, &site.id, &spec).await?;
    }
    store
        .create_number(
            &acc.id,
            &site.id,
            &NumberSpec::parse("+7 495 120-00-99", ru, "fallback", Some(&pool.id), None)?,
        )
        .await?;
    store
        .create_source(
            &acc.id,
            &site.id,
            &SourceSpec::parse("avito", Some("referral"), Some("Avito listing"))?,
        )
        .await?;
    store
        .create_source(
            &acc.id,
            &site.id,
            &SourceSpec::parse(
                "billboard",
                Some("offline"),
                Some("Billboard on the ring road"),
            )?,
        )
        .await?;
    let avito = store
        .create_number(
            &acc.id,
            &site.id,
            &NumberSpec::parse("+7 495 130-00-01", ru, "static", None, Some("avito"))?,
        )
        .await?;
    store
        .create_number(
            &acc.id,
            &site.id,
            &NumberSpec::parse("+7 495 130-00-02", ru, "static", None, Some("billboard"))?,
        )
        .await?;
    store
        .create_rule(
            &acc.id,
            &site.id,
            &RuleSpec {
                priority: 10,
                matcher: RuleMatch {
                    utm_source: Some("avito".into()),
                    ..RuleMatch::default()
                },
                pool_id: None,
                number_id: Some(avito.id.clone()),
                swap: true,
            },
        )
        .await?;
    store
        .create_rule(
            &acc.id,
            &site.id,
            &RuleSpec {
                priority: 20,
                matcher: RuleMatch {
                    landing_path: Some("/demo/careers".into()),
                    ..RuleMatch::default()
                },
                pool_id: None,
                number_id: None,
                swap: false,
            },
        )
        .await?;
    let (visits, calls) = history(store, &acc.id, &site, now_ms).await?;
    Ok(Demo {
        account_id: acc.id,
        token,
        site,
        visits,
        calls,
    })
}

/// Two weeks of visits and calls through the real engine, with a simulated clock.
async fn history(
    store: &Store,
    account_id: &str,
    site: &Site,
    now_ms: i64,
) -> anyhow::Result<(usize, usize)> {
    let ctx = store.site_context_of(site.clone()).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let landings = [
        ("https://localhost/demo/?utm_source=yandex&utm_medium=cpc&utm_campaign=brand&utm_term=купить+диван", ""),
        ("https://localhost/demo/?utm_source=google&utm_medium=cpc&utm_campaign=sofas&utm_term=sofa+delivery&gclid=Cj0demo", ""),
        ("https://localhost/demo/", "https://yandex.ru/"),
        ("https://localhost/demo/", "https://www.google.com/"),
        ("https://localhost/demo/", ""),
        ("https://localhost/demo/?utm_source=vk&utm_medium=social", "https://vk.com/"),
        ("https://localhost/demo/?utm_source=avito&utm_medium=referral", "https://www.avito.ru/"),
        ("https://localhost/demo/?utm_source=newsletter&utm_medium=email&utm_campaign=november", ""),
    ];
    let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let (mut visits, mut calls) = (0, 0);
    let start = now_ms - 14 * 24 * HOUR;
    for day in 0..14 {
        for _ in 0..rng.gen_range(25..45) {
            let at = start + day * 24 * HOUR + rng.gen_range(8 * HOUR..22 * HOUR);
            let (url, referrer) = landings[rng.gen_range(0..landings.len())];
            let req = VisitRequest {
                url: url.into(),
                referrer: Some(referrer.into()),
                user_agent: Some(ua.into()),
                ..VisitRequest::default()
            };
            let shown = store.visit(&ctx, &req, at).await?;
            visits += 1;
            if rng.gen_bool(0.12) {
                let to = shown
                    .e164()
                    .map_or_else(|| site.site_numbers[0].clone(), str::to_owned);
                let call = CallInput {
                    account_id: account_id.to_owned(),
                    site_id: site.id.clone(),
                    provider: "demo".into(),
                    provider_call_id: format!("demo-{visits}"),
                    to,
                    from: format!("+7916{:07}", rng.gen_range(0..10_000_000)),
                    at: at + rng.gen_range(MINUTE..12 * MINUTE),
                    answered: rng.gen_bool(0.85),
                    talk_seconds: rng.gen_range(20..400),
                };
                store.ingest_call(&call).await?;
                calls += 1;
            }
        }
    }
    Ok((visits, calls))
}

/// The demo landing page: the numbers in many written forms, and the snippet.
pub async fn page(State(st): State<AppState>) -> Response {
    let Some(key) = st.config.demo_site_key.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "the demo page exists under `calltrail demo`\n",
        )
            .into_response();
    };
    let snippet = st.install_snippet(key);
    let html = DEMO_HTML.replace("{{SNIPPET}}", &snippet);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

const DEMO_HTML: &str = r#"<!doctype html>
<html lang="ru">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Диваны «Демо» — calltrail demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7fb; }
  header { background: #1d2330; color: #fff; padding: 16px 32px; display: flex; justify-content: space-between; align-items: center; }
  header a { color: #ffd166; font-size: 22px; font-weight: 600; text-decoration: none; }
  main { max-width: 860px; margin: 32px auto; padding: 0 24px; }
  .card { background: #fff; border-radius: 12px; padding: 20px 24px; margin-bottom: 20px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
  .phone { font-size: 20px; font-weight: 600; }
  code { background: #eef0f6; padding: 2px 6px; border-radius: 4px; }
  small { color: #667; }
</style>
</head>
<body>
<header>
  <strong>Диваны «Демо»</strong>
  <a class="phone" href="tel:+74951234567">+7 (495) 123-45-67</a>
</header>
<main>
  <div class="card">
    <h1>Диваны с доставкой по Москве</h1>
    <p>Звоните: <span class="phone">8 (495) 123-45-67</span> или бесплатно
       <span class="phone">8-800-555-35-35</span>.</p>
    <p>Отдел продаж: <span class="phone"><span>+7 (495)</span> <b>123-45-67</b></span></p>
    <p><small>Ваш код для оператора / your code for the operator:
       <b data-calltrail-code>—</b></small></p>
  </div>
  <div class="card">
    <h2>About this page</h2>
    <p>This is calltrail's demo landing page. The script below swaps the shop's numbers for a
       tracking number bound to your visit; a call to it is matched to this visit.
       Try <code>?utm_source=avito</code> (a static number) or <code>?utm_source=google&amp;utm_medium=cpc</code>.</p>
    <p><small>Номер в подвале не подменяется (noswap):
       <span data-calltrail-noswap>+7 (495) 123-45-67</span></small></p>
  </div>
</main>
{{SNIPPET}}
</body>
</html>
"#;
