//! Small domain values: channels, number kinds, pool policies, domains, time zones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::Invalid;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s { $($s => Ok($name::$variant),)+
                    _ => Err(Invalid::field("", format!(
                        "`{s}` is not one of: {}",
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// The marketing channel a visit or call came through.
    Channel {
        Direct = "direct",
        OrganicSearch = "organic_search",
        PaidSearch = "paid_search",
        Social = "social",
        Email = "email",
        Referral = "referral",
        /// Offline advertising, via a static number.
        Offline = "offline",
        Unknown = "unknown",
    }
}

string_enum! {
    /// What a tracking number is for.
    NumberKind {
        /// Bound to one source (billboard, Avito, partner ...).
        Static = "static",
        /// One of a pool's numbers shown to web visitors.
        Pool = "pool",
        /// Shown when a pool has no free number.
        Fallback = "fallback",
    }
}

string_enum! {
    /// What a pool does when every number is leased.
    ExhaustionPolicy {
        /// Show the pool's fallback number.
        Fallback = "fallback",
        /// Reuse the least recently active number, preferring one of the same source.
        Reuse = "reuse",
    }
}

string_enum! {
    /// A dashboard user's role within an account.
    Role {
        Owner = "owner",
        Admin = "admin",
        Analyst = "analyst",
        Agent = "agent",
    }
}

/// A website domain, lowercase ASCII (IDNs are stored in punycode, as browsers send them).
///
/// A domain covers itself and its subdomains, on any port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Domain(String);

impl Domain {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let raw = input.trim().trim_end_matches('.');
        let raw = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .unwrap_or(raw);
        let raw = raw.split('/').next().unwrap_or(raw);
        if raw.is_empty() {
            return Err(Invalid::field("", "domain must not be empty"));
        }
        if raw.contains(':') && !raw.starts_with('[') {
            return Err(Invalid::field(
                "",
                format!("`{input}`: give the domain without a port (a domain covers every port)"),
            ));
        }
        let ascii = idna::domain_to_ascii(raw)
            .map_err(|_| Invalid::field("", format!("`{input}` is not a domain name")))?;
        let ok = !ascii.is_empty()
            && ascii.len() <= 253
            && ascii.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(Invalid::field(
                "",
                format!("`{input}` is not a domain name"),
            ));
        }
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `host` (no port) is this domain or one of its subdomains.
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        host.eq_ignore_ascii_case(&self.0)
            || (host.len() > self.0.len()
                && host.as_bytes()[host.len() - self.0.len() - 1] == b'.'
                && host[host.len() - self.0.len()..].eq_ignore_ascii_case(&self.0))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone name that exists ("Europe/Moscow").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let t = input.trim();
        match jiff::tz::TimeZone::get(t) {
            Ok(_) if !t.is_empty() => Ok(Self(t.to_owned())),
            _ => Err(Invalid::field(
                "",
                format!("`{input}` is not an IANA time zone (e.g. Europe/Moscow, Asia/Almaty)"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tz(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.0).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), *c);
        }
        let e = "weird".parse::<NumberKind>().unwrap_err();
        assert!(e.to_string().contains("static, pool, fallback"), "{e}");
        assert_eq!(
            serde_json::to_string(&Channel::PaidSearch).unwrap(),
            "\"paid_search\""
        );
    }

    #[test]
    fn domains() {
        let d = Domain::parse("Example.COM").unwrap();
        assert_eq!(d.as_str(), "example.com");
        assert!(d.covers("example.com"));
        assert!(d.covers("shop.example.com"));
        assert!(d.covers("WWW.Example.com"));
        assert!(!d.covers("badexample.com"));
        assert!(!d.covers("example.com.evil.net"));
        assert_eq!(
            Domain::parse("https://shop.ru/path").unwrap().as_str(),
            "shop.ru"
        );
        assert_eq!(
            Domain::parse("пример.рф").unwrap().as_str(),
            "xn--e1afmkfd.xn--p1ai"
        );
        for bad in [
            "",
            "exa mple.com",
            "-a.com",
            "a..com",
            "example.com:8080",
            "a_b.com",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Domain::parse("127.0.0.1").is_ok());
        assert!(Domain::parse("localhost").is_ok());
    }

    #[test]
    fn time_zones() {
        assert!(TimeZoneName::parse("Europe/Moscow").is_ok());
        assert!(TimeZoneName::parse("Asia/Almaty").is_ok());
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
        assert!(TimeZoneName::parse("").is_err());
    }
}
