//! Validated specifications of the setup resources: sites, pools, sources, numbers.
//!
//! Each `*Spec` can only hold valid values; the REST layer builds them from requests
//! and the store writes them.

use crate::domain::{Channel, Domain, ExhaustionPolicy, NumberKind, TimeZoneName};
use crate::phone::{Phone, Region};
use crate::validate::{self, Errors, Invalid};

pub const MAX_NAME: usize = 200;
/// Longest hold a pool may keep a number after the last activity (one day).
pub const MAX_HOLD_MINUTES: u32 = 24 * 60;
pub const DEFAULT_HOLD_MINUTES: u32 = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    pub name: String,
    pub domains: Vec<Domain>,
    pub timezone: TimeZoneName,
    pub default_region: Region,
    /// The numbers printed on the site that the script replaces.
    pub site_numbers: Vec<Phone>,
    /// Where calls to tracking numbers are forwarded.
    pub forward_to: Option<Phone>,
}

/// A site as written by a person: strings to be validated.
#[derive(Debug, Clone, Default)]
pub struct SiteInput<'a> {
    pub name: &'a str,
    pub domains: &'a [String],
    pub timezone: &'a str,
    pub default_region: &'a str,
    pub site_numbers: &'a [String],
    pub forward_to: Option<&'a str>,
}

impl SiteSpec {
    pub fn parse(input: &SiteInput<'_>) -> Result<Self, Invalid> {
        let mut errs = Errors::new();
        let name = errs.check("name", validate::name(input.name, MAX_NAME));
        let timezone = errs.check("timezone", TimeZoneName::parse(input.timezone));
        let region = errs.check("default_region", Region::parse(input.default_region));
        if input.domains.is_empty() {
            errs.push("domains", "give at least one domain the site runs on");
        }
        if input.domains.len() > 50 {
            errs.push("domains", "at most 50 domains");
        }
        let mut domains: Vec<Domain> = Vec::with_capacity(input.domains.len());
        for (i, d) in input.domains.iter().enumerate() {
            if let Some(d) = errs.check(&format!("domains[{i}]"), Domain::parse(d)) {
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
        if input.site_numbers.len() > 20 {
            errs.push("site_numbers", "at most 20 numbers");
        }
        let mut site_numbers: Vec<Phone> = Vec::with_capacity(input.site_numbers.len());
        for (i, n) in input.site_numbers.iter().enumerate() {
            if let Some(p) = errs.check(&format!("site_numbers[{i}]"), Phone::parse(n, region)) {
                if site_numbers.contains(&p) {
                    errs.push(format!("site_numbers[{i}]"), format!("{p} is listed twice"));
                } else {
                    site_numbers.push(p);
                }
            }
        }
        let forward_to = input
            .forward_to
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| errs.check("forward_to", Phone::parse(s, region)));
        errs.finish()?;
        match (name, timezone, region) {
            (Some(name), Some(timezone), Some(default_region)) => Ok(Self {
                name,
                domains,
                timezone,
                default_region,
                site_numbers,
                forward_to,
            }),
            _ => Err(Invalid::field("", "invalid site")),
        }
    }

    /// Whether a page on `host` belongs to this site.
    pub fn covers_host(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d.covers(host))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub hold_minutes: u32,
    pub on_exhaustion: ExhaustionPolicy,
}

impl PoolSpec {
    pub fn parse(
        name: &str,
        hold_minutes: Option<i64>,
        on_exhaustion: Option<&str>,
    ) -> Result<Self, Invalid> {
        let mut errs = Errors::new();
        let name = errs.check("name", validate::name(name, MAX_NAME));
        let hold = hold_minutes.unwrap_or(i64::from(DEFAULT_HOLD_MINUTES));
        if !(1..=i64::from(MAX_HOLD_MINUTES)).contains(&hold) {
            errs.push(
                "hold_minutes",
                format!("must be between 1 and {MAX_HOLD_MINUTES} minutes"),
            );
        }
        let policy = errs.check(
            "on_exhaustion",
            on_exhaustion.map_or(Ok(ExhaustionPolicy::Fallback), str::parse),
        );
        errs.finish()?;
        match (name, policy) {
            (Some(name), Some(on_exhaustion)) => Ok(Self {
                name,
                hold_minutes: hold as u32,
                on_exhaustion,
            }),
            _ => Err(Invalid::field("", "invalid pool")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    pub channel: Channel,
    pub description: Option<String>,
}

impl SourceSpec {
    pub fn parse(
        name: &str,
        channel: Option<&str>,
        description: Option<&str>,
    ) -> Result<Self, Invalid> {
        let mut errs = Errors::new();
        let name = errs.check("name", source_name(name));
        let channel = errs.check("channel", channel.map_or(Ok(Channel::Offline), str::parse));
        let description = description
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .and_then(|d| errs.check("description", validate::name(d, 2000)));
        errs.finish()?;
        match (name, channel) {
            (Some(name), Some(channel)) => Ok(Self {
                name,
                channel,
                description,
            }),
            _ => Err(Invalid::field("", "invalid source")),
        }
    }
}

/// A source name as it appears in reports and in `utm_source`: trimmed, lowercase.
pub fn source_name(name: &str) -> Result<String, Invalid> {
    validate::name(name, 100).map(|n| n.to_lowercase())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberSpec {
    pub number: Phone,
    pub kind: NumberKind,
    pub pool_id: Option<String>,
    /// The source a static number stands for.
    pub source: Option<String>,
}

impl NumberSpec {
    pub fn parse(
        number: &str,
        region: Region,
        kind: &str,
        pool_id: Option<&str>,
        source: Option<&str>,
    ) -> Result<Self, Invalid> {
        let mut errs = Errors::new();
        let number = errs.check("number", Phone::parse(number, Some(region)));
        let kind: Option<NumberKind> = errs.check("kind", kind.parse());
        let pool_id = pool_id.map(str::trim).filter(|p| !p.is_empty());
        let source = source
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| errs.check("source", source_name(s)));
        match kind {
            Some(NumberKind::Static) => {
                if pool_id.is_some() {
                    errs.push("pool_id", "a static number belongs to a source, not a pool");
                }
                if source.is_none() {
                    errs.push(
                        "source",
                        "a static number needs the source it stands for (e.g. \"avito\")",
                    );
                }
            }
            Some(k @ (NumberKind::Pool | NumberKind::Fallback)) if pool_id.is_none() => {
                errs.push(
                    "pool_id",
                    format!("a {k} number needs the pool it belongs to"),
                );
            }
            _ => {}
        }
        errs.finish()?;
        match (number, kind) {
            (Some(number), Some(kind)) => Ok(Self {
                number,
                kind,
                pool_id: pool_id.map(str::to_owned),
                source,
            }),
            _ => Err(Invalid::field("", "invalid number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn site_ok() {
        let domains = strings(&["Shop.ru", "shop.ru", "пример.рф"]);
        let nums = strings(&["8 (495) 123-45-67"]);
        let s = SiteSpec::parse(&SiteInput {
            name: " Shop ",
            domains: &domains,
            timezone: "Europe/Moscow",
            default_region: "ru",
            site_numbers: &nums,
            forward_to: Some("+7 916 123-45-67"),
        })
        .unwrap();
        assert_eq!(s.name, "Shop");
        assert_eq!(s.domains.len(), 2);
        assert_eq!(s.site_numbers[0].as_str(), "+74951234567");
        assert!(s.covers_host("www.shop.ru"));
        assert!(!s.covers_host("evil.ru"));
    }

    #[test]
    fn site_errors_name_fields() {
        let domains = strings(&["ok.ru", "bad domain"]);
        let nums = strings(&["8 495 123 45 67", "hello", "+74951234567"]);
        let e = SiteSpec::parse(&SiteInput {
            name: "",
            domains: &domains,
            timezone: "Moon/Base",
            default_region: "RU",
            site_numbers: &nums,
            forward_to: Some("12"),
        })
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "timezone",
                "domains[1]",
                "site_numbers[1]",
                "site_numbers[2]",
                "forward_to"
            ]
        );
    }

    #[test]
    fn pool_rules() {
        let p = PoolSpec::parse("Ads", None, None).unwrap();
        assert_eq!(p.hold_minutes, DEFAULT_HOLD_MINUTES);
        assert_eq!(p.on_exhaustion, ExhaustionPolicy::Fallback);
        assert!(PoolSpec::parse("Ads", Some(0), None).is_err());
        assert!(PoolSpec::parse("Ads", Some(5000), None).is_err());
        let e = PoolSpec::parse("Ads", Some(10), Some("panic")).unwrap_err();
        assert_eq!(e.0[0].field, "on_exhaustion");
    }

    #[test]
    fn number_rules() {
        let ru = Region::parse("RU").unwrap();
        let n = NumberSpec::parse("8 495 000-00-01", ru, "static", None, Some("Avito")).unwrap();
        assert_eq!(n.source.as_deref(), Some("avito"));
        assert_eq!(n.number.as_str(), "+74950000001");
        let e = NumberSpec::parse("8 495 000-00-01", ru, "static", Some("p1"), None).unwrap_err();
        assert_eq!(e.0.len(), 2);
        assert!(NumberSpec::parse("8 495 000-00-01", ru, "pool", None, None).is_err());
        assert!(NumberSpec::parse("8 495 000-00-01", ru, "pool", Some("p1"), None).is_ok());
        let e = NumberSpec::parse("nope", ru, "vanity", None, None).unwrap_err();
        assert_eq!(e.0[0].field, "number");
        assert_eq!(e.0[1].field, "kind");
    }
}
