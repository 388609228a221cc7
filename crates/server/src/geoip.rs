//! The visitor's city from their IP address, when the operator configures a
//! MaxMind DB (`.mmdb`) city database: MaxMind GeoIP2-City / GeoLite2-City or
//! DB-IP City (Lite). Without one, no city is looked up.
//!
//! The file is read into memory once at start-up (GeoLite2-City is ~60 MB); a
//! lookup is a walk down an in-memory binary tree plus a few small decodes, cheap
//! enough to do inside the visit request.
//!
//! Names: both layouts keep the city under `city.names.<language>`. The first users
//! are in Russia and Kazakhstan, and the dashboard is read in Russian, so the
//! Russian name (`ru`) is preferred, then the English one (`en`). GeoIP2/GeoLite2
//! carry `ru` for most cities; DB-IP City Lite names cities in English only, so
//! with it the `en` name is what is stored.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader};

/// Languages tried in order for the city name.
const LANGUAGES: [&str; 2] = ["ru", "en"];
/// Longest city name kept (the file is outside input).
const MAX_NAME_CHARS: usize = 100;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a MaxMind DB (.mmdb) file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
}

/// An opened city database.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.reader.metadata();
        f.debug_struct("GeoIp")
            .field("database_type", &m.database_type)
            .field("build_epoch", &m.build_epoch)
            .finish_non_exhaustive()
    }
}

impl GeoIp {
    /// Read the whole file into memory and check its layout.
    pub fn open(path: &Path) -> Result<Self, GeoIpError> {
        let buf = std::fs::read(path).map_err(|source| GeoIpError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(buf).map_err(|source| GeoIpError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// A database already in memory.
    pub fn from_bytes(buf: Vec<u8>) -> Result<Self, maxminddb::MaxMindDbError> {
        Ok(Self {
            reader: Reader::from_source(buf)?,
        })
    }

    /// The `database_type` the file declares, e.g. `GeoLite2-City` or `DBIP-City-Lite`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Whether the database looks like one that has cities (a country-only
    /// database opens fine but never names a city).
    pub fn has_cities(&self) -> bool {
        self.database_type().to_ascii_lowercase().contains("city")
    }

    /// The city of `ip`: its Russian name, else its English one. `None` for private,
    /// loopback and link-local addresses, for addresses the database does not know,
    /// and for any record it cannot decode (a damaged file never fails a visit).
    pub fn lookup(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        if is_local(ip) {
            return None;
        }
        let found = self.reader.lookup(ip).ok()?;
        if !found.has_data() {
            return None;
        }
        LANGUAGES.iter().find_map(|lang| {
            let path = [
                PathElement::Key("city"),
                PathElement::Key("names"),
                PathElement::Key(lang),
            ];
            found
                .decode_path::<String>(&path)
                .ok()
                .flatten()
                .map(|name| name.trim().chars().take(MAX_NAME_CHARS).collect::<String>())
                .filter(|name| !name.is_empty())
        })
    }

    /// [`GeoIp::lookup`] for an address as text (as `client_ip` gives it).
    pub fn lookup_str(&self, ip: &str) -> Option<String> {
        self.lookup(ip.trim().parse().ok()?)
    }
}

/// Addresses no database places: RFC 1918 / unique-local, loopback, link-local,
/// unspecified. Documentation ranges (TEST-NET) are not in this list on purpose.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_skipped_but_test_nets_are_not() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(is_local(ip), "{ip}");
        }
        for ip in [
            "198.51.100.7",
            "203.0.113.9",
            "192.0.2.1",
            "8.8.8.8",
            "2a00::1",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(!is_local(ip), "{ip}");
        }
        let mapped: IpAddr = "::ffff:192.168.0.1".parse().expect("an address");
        assert!(is_local(mapped.to_canonical()));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bytes in [
            Vec::new(),
            b"not a database".to_vec(),
            b"\xAB\xCD\xEFMaxMind.com".to_vec(),
            b"\xAB\xCD\xEFMaxMind.com\xe0".to_vec(),
        ] {
            assert!(GeoIp::from_bytes(bytes).is_err());
        }
        let e = GeoIp::open(Path::new("/nonexistent/GeoLite2-City.mmdb"))
            .expect_err("a missing file")
            .to_string();
        assert!(
            e.contains("cannot read /nonexistent/GeoLite2-City.mmdb"),
            "{e}"
        );
    }
}
