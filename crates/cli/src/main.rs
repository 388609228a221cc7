//! `calltrail`: the command line of the calltrail call tracker.

mod config;

/// mimalloc serves every allocation in the process, SQLite's included (the `override`
/// feature replaces `malloc`): page loads allocate and free many small strings on several
/// threads, where it is markedly cheaper than glibc's allocator (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use calltrail_server::{AppState, ServerConfig};
use calltrail_store::Store;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "calltrail",
    version,
    about = "Self-hosted call tracking: which ad, visit and keyword made the phone ring"
)]
struct Cli {
    /// Config file [default: ./calltrail.toml if present]
    #[arg(long, global = true, env = "CALLTRAIL_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve,
    /// Run the server with a demo account, site, numbers, landing page and history
    Demo,
    /// Apply database migrations and exit
    Migrate,
    /// Print the effective configuration (secrets masked)
    Config,
    /// Accounts and API tokens
    #[command(subcommand)]
    Admin(Admin),
    /// Simulate traffic against pool strategies: attribution accuracy and pool sizing
    Simulate(calltrail_sim::SimulateArgs),
}

#[derive(Subcommand)]
enum Admin {
    /// Create an account and a first API token for it
    CreateAccount {
        /// Account name, e.g. the business's name
        name: String,
        /// Print {"account_id": ..., "token": ...}
        #[arg(long)]
        json: bool,
    },
    /// Create another API token for an account
    CreateToken {
        #[arg(long)]
        account: String,
        /// A name to recognise the token by
        #[arg(long, default_value = "api")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a call through the same path a provider's webhook takes, and print its attribution
    SimulateCall {
        /// The site's id
        #[arg(long)]
        site: String,
        /// The number called (a tracking number of the site, any written form)
        #[arg(long)]
        to: String,
        /// The caller (any written form, or `hidden`)
        #[arg(long, default_value = "hidden")]
        from: String,
        /// When the call came (RFC 3339) [default: now]
        #[arg(long)]
        at: Option<String>,
        /// Seconds of conversation; 0 makes a missed call
        #[arg(long, default_value_t = 60)]
        talk_seconds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let url = cfg.database_url();
    Store::open(&url)
        .await
        .with_context(|| format!("opening {}", calltrail_store::mask_url(&url)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::load(cli.config.as_deref(), &cli.overrides)?;
    match cli.command {
        Command::Config => {
            print!("{}", cfg.render_masked());
            Ok(())
        }
        Command::Migrate => {
            init_logging(&cfg, &cfg.log_level);
            let store = open_store(&cfg).await?;
            println!("database is up to date ({})", store.backend().as_str());
            Ok(())
        }
        Command::Serve => {
            init_logging(&cfg, &cfg.log_level);
            serve(&cfg, false).await
        }
        Command::Demo => {
            init_logging(&cfg, &cfg.log_level);
            serve(&cfg, true).await
        }
        Command::Simulate(args) => calltrail_sim::run(args).await,
        Command::Admin(admin) => {
            init_logging(&cfg, "warn");
            let store = open_store(&cfg).await?;
            run_admin(&store, admin).await
        }
    }
}

async fn run_admin(store: &Store, admin: Admin) -> anyhow::Result<()> {
    match admin {
        Admin::CreateAccount { name, json } => {
            let acc = store.create_account(&name).await?;
            let (_, token) = store.create_token(&acc.id, "initial").await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"account_id": acc.id, "token": token})
                );
            } else {
                println!(
                    "account: {} ({})\nAPI token: {token}\n(keep the token: it is shown once)",
                    acc.id, acc.name
                );
            }
        }
        Admin::SimulateCall {
            site,
            to,
            from,
            at,
            talk_seconds,
        } => {
            let site = store
                .site_by_id(&site)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no site with id `{site}`"))?;
            let region = calltrail_core::Region::parse(&site.default_region)?;
            let to = calltrail_core::Phone::parse(&to, Some(region))
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            let from = if from.trim().eq_ignore_ascii_case("hidden") {
                "hidden".to_owned()
            } else {
                calltrail_core::Phone::parse(&from, Some(region))
                    .map_err(|e| anyhow::anyhow!("--from: {e}"))?
                    .as_str()
                    .to_owned()
            };
            let at = match at {
                Some(t) => t
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| anyhow::anyhow!("--at: not an RFC 3339 time: {e}"))?,
                None => jiff::Timestamp::now(),
            };
            let input = calltrail_store::tracking::CallInput {
                account_id: site.account_id.clone(),
                site_id: site.id.clone(),
                provider: "simulated".into(),
                provider_call_id: format!("sim-{}-{}", site.id, at.as_millisecond()),
                to: to.as_str().to_owned(),
                from,
                at: at.as_millisecond(),
                answered: talk_seconds > 0,
                talk_seconds: i64::from(talk_seconds),
            };
            let (call, _) = store.ingest_call(&input).await?;
            println!("{}", serde_json::to_string_pretty(&call)?);
        }
        Admin::CreateToken {
            account,
            name,
            json,
        } => {
            let (tok, plain) = store.create_token(&account, &name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"account_id": account, "token_id": tok.id, "token": plain})
                );
            } else {
                println!("API token: {plain}\n(keep it: it is shown once)");
            }
        }
    }
    Ok(())
}

async fn serve(cfg: &Config, demo: bool) -> anyhow::Result<()> {
    let geoip = open_geoip(cfg)?;
    let store = open_store(cfg).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = match &cfg.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{addr}"),
    };
    let demo = if demo {
        Some(
            calltrail_server::demo::seed(&store, jiff_now_ms())
                .await
                .context("setting up the demo")?,
        )
    } else {
        None
    };
    // Signal handlers first: whoever reads the line below may stop us at once.
    let shutdown = calltrail_server::shutdown_signal();
    tracing::info!(%addr, backend = store.backend().as_str(), "calltrail listening");
    println!(
        "calltrail listening on http://{addr} ({} database)",
        store.backend().as_str()
    );
    if let Some(d) = &demo {
        println!(
            "\ndemo account: {} ({})\nAPI token:    {}\ndemo page:    {public_url}/demo/   (try {public_url}/demo/?utm_source=avito)\n\
             REST API:     {public_url}/api/v1/sites  (Authorization: Bearer <token>)\nOpenAPI:      {public_url}/api/v1/openapi.json\n\
             test call:    curl -s -X POST {public_url}/api/v1/sites/{}/test-calls -H 'Authorization: Bearer {}' \\\n\
                             -H 'Content-Type: application/json' -d '{{\"to\": \"+74951200001\", \"from\": \"+79161234567\"}}'",
            d.account_id, calltrail_server::demo::DEMO_ACCOUNT, d.token, d.site.id, d.token
        );
        if d.visits > 0 {
            println!(
                "history:      {} simulated visits and {} calls over the last 14 days",
                d.visits, d.calls
            );
        }
    }
    let state = AppState::new(
        store.clone(),
        ServerConfig {
            public_url,
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: Duration::from_secs(cfg.request_timeout_secs),
            ping_s: cfg.ping_s,
            demo_site_key: demo.map(|d| d.site.public_key),
            data_dir: cfg.data_dir.clone(),
            geoip,
        },
    );
    calltrail_server::recordings::spawn_sweeper(state.clone(), Duration::from_secs(300));
    // AMI clients dial the PBXs of `asterisk_ami` connections (new ones within 30 s).
    let ami = calltrail_server::ami::spawn_all(state.clone());
    let served = calltrail_server::serve(listener, state, shutdown).await;
    ami.abort();
    served?;
    store.close().await;
    Ok(())
}

/// The configured city database, opened before anything else starts: a file that is
/// configured but cannot be read stops start-up rather than silently losing cities.
fn open_geoip(
    cfg: &Config,
) -> anyhow::Result<Option<std::sync::Arc<calltrail_server::geoip::GeoIp>>> {
    let Some(path) = &cfg.geoip_db else {
        return Ok(None);
    };
    let db =
        calltrail_server::geoip::GeoIp::open(path).map_err(|e| anyhow::anyhow!("geoip_db: {e}"))?;
    if !db.has_cities() {
        tracing::warn!(
            path = %path.display(),
            database_type = db.database_type(),
            "geoip_db does not look like a city database; sessions may get no city"
        );
    }
    tracing::info!(path = %path.display(), database_type = db.database_type(), "city database loaded");
    Ok(Some(std::sync::Arc::new(db)))
}

fn jiff_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
