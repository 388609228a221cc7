//! Configuration: built-in defaults, then `calltrail.toml` (or `--config FILE`), then
//! `CALLTRAIL_*` environment variables, then command-line flags.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: String,
    /// Folder for the SQLite database, recordings and other files.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://<data_dir>/calltrail.db`.
    pub database_url: Option<String>,
    /// URL people reach this server at; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `calltrail_server=debug,info` ...); `RUST_LOG` wins.
    pub log_level: String,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// Seconds between the snippet's heartbeats while a tab is visible.
    pub ping_s: u32,
    /// A MaxMind/DB-IP city database (`.mmdb`) for the visitor's city; none: no city.
    pub geoip_db: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8790".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            public_url: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            ping_s: 30,
            geoip_db: None,
        }
    }
}

/// Values given as flags; only those present override the layers below.
#[derive(Debug, Default, Clone, Serialize, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:8790]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Data folder [default: ./data]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://FILE or postgres://...)
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// URL the server is reached at, for install snippets and webhook URLs
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Log format
    #[arg(long, global = true, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Environment variables the config layer must not read as settings.
const NOT_SETTINGS: [&str; 2] = ["config", "test_database_url"];

impl Config {
    pub fn load(file: Option<&Path>, flags: &Overrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    bail!("config file {} does not exist", path.display());
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None if Path::new("calltrail.toml").is_file() => {
                fig = fig.merge(Toml::file_exact("calltrail.toml"));
            }
            None => {}
        }
        fig = fig
            .merge(Env::prefixed("CALLTRAIL_").ignore(&NOT_SETTINGS))
            .merge(Serialized::globals(flags));
        let cfg: Config = fig.extract().map_err(|e| anyhow::anyhow!(one_line(&e)))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "listen: `{}` is not an address like 127.0.0.1:8790",
                    self.listen
                )
            })?;
        if let Some(url) = &self.database_url {
            calltrail_store::Backend::from_url(url)
                .map_err(|e| anyhow::anyhow!("database_url: {e}"))?;
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes: must be at least 1024");
        }
        if !(1..=600).contains(&self.ping_s) {
            bail!("ping_s: must be between 1 and 600 seconds");
        }
        if self.request_timeout_secs == 0 {
            bail!("request_timeout_secs: must be at least 1");
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("calltrail.db").display()))
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn render_masked(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = Some(calltrail_store::mask_url(&self.database_url()));
        shown.public_url = Some(self.public_url());
        toml_string(&shown)
    }
}

fn toml_string(cfg: &Config) -> String {
    let v = serde_json::to_value(cfg).unwrap_or_default();
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            if !v.is_null() {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
    }
    out
}

fn one_line(e: &figment::Error) -> String {
    let mut s = e.to_string();
    if let Some(src) = &e.metadata {
        s = format!("{s} (from {})", src.name);
    }
    s.replace('\n', " ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "calltrail.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nlog_level = \"debug\"",
            )?;
            jail.set_env("CALLTRAIL_LISTEN", "127.0.0.1:9001");
            jail.set_env("CALLTRAIL_TEST_DATABASE_URL", "postgres://ignored");
            let cfg = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen, "127.0.0.1:9001");
            assert_eq!(cfg.log_level, "debug");
            assert_eq!(cfg.database_url(), "sqlite:///tmp/x/calltrail.db");
            let flags = Overrides {
                listen: Some("127.0.0.1:9002".into()),
                ..Overrides::default()
            };
            let cfg = Config::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen, "127.0.0.1:9002");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CALLTRAIL_LISTEN", "nowhere");
            let e = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("listen"), "{e}");
            jail.set_env("CALLTRAIL_LISTEN", "127.0.0.1:1");
            jail.create_file("calltrail.toml", "lisen = 1")?;
            let e = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("lisen"), "{e}");
            let e = Config::load(Some(Path::new("/nope.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn masks_the_password() {
        let cfg = Config {
            database_url: Some("postgres://ct:hunter2@db/ct".into()),
            ..Config::default()
        };
        let s = cfg.render_masked();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("postgres://ct:***@db/ct"), "{s}");
    }
}
