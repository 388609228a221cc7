//! Combined tracking: a site's rules, in priority order, decide what a session is shown.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Domain};
use crate::validate::{Errors, Invalid};

/// What a rule looks at; every condition given must hold. Text compares case-insensitively;
/// a trailing `*` matches any rest (`spring_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_campaign: Option<String>,
    /// The referrer's domain or any subdomain of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_domain: Option<String>,
    /// The landing page's path starts with this (`/promo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_path: Option<String>,
    /// The landing URL carries this query parameter: `name` (present) or `name=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

/// The facts of a session a rule is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub source: &'a str,
    pub medium: &'a str,
    pub campaign: Option<&'a str>,
    pub referrer_domain: Option<&'a str>,
    pub landing_path: &'a str,
    /// The landing URL, whose query `landing_param` conditions read (decoded only for them).
    pub landing_url: &'a str,
    pub channel: Channel,
}

fn text_matches(pattern: &str, value: &str) -> bool {
    let p = pattern.trim();
    match p.strip_suffix('*') {
        Some(prefix) => value
            .get(..prefix.len())
            .is_some_and(|v| v.eq_ignore_ascii_case(prefix)),
        None => value.eq_ignore_ascii_case(p) || value.to_lowercase() == p.to_lowercase(),
    }
}

impl RuleMatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errs = Errors::new();
        let fields = [
            ("utm_source", &self.utm_source),
            ("utm_medium", &self.utm_medium),
            ("utm_campaign", &self.utm_campaign),
            ("landing_param", &self.landing_param),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                if v.trim().is_empty() || v.len() > 200 {
                    errs.push(format!("match.{name}"), "must be 1-200 characters");
                }
            }
        }
        if let Some(d) = &self.referrer_domain {
            errs.check("match.referrer_domain", Domain::parse(d));
        }
        if let Some(p) = &self.landing_path {
            if !p.starts_with('/') || p.len() > 500 {
                errs.push("match.landing_path", "must start with / (e.g. /promo)");
            }
        }
        if self == &Self::default() {
            errs.push("match", "give at least one condition (an empty match would catch everyone: use priority order instead)");
        }
        errs.finish()
    }

    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.utm_source
            .as_deref()
            .is_none_or(|p| text_matches(p, s.source))
            && self
                .utm_medium
                .as_deref()
                .is_none_or(|p| text_matches(p, s.medium))
            && self
                .utm_campaign
                .as_deref()
                .is_none_or(|p| s.campaign.is_some_and(|c| text_matches(p, c)))
            && self.referrer_domain.as_deref().is_none_or(|d| {
                s.referrer_domain
                    .is_some_and(|r| Domain::parse(d).is_ok_and(|d| d.covers(r)))
            })
            && self
                .landing_path
                .as_deref()
                .is_none_or(|p| s.landing_path.starts_with(p))
            && self.landing_param.as_deref().is_none_or(|p| {
                let (name, value) = p.split_once('=').map_or((p, None), |(n, v)| (n, Some(v)));
                landing_pairs(s.landing_url)
                    .any(|(n, v)| n == name && value.is_none_or(|want| text_matches(want, &v)))
            })
            && self.channel.is_none_or(|c| c == s.channel)
    }
}

/// What a matching rule shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// A number from this pool.
    Pool(String),
    /// This (static) number.
    Number(String),
    /// Leave the site's own number.
    NoSwap,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub priority: i64,
    pub matcher: RuleMatch,
    pub action: RuleAction,
}

/// The first rule (lowest priority value, then id) that matches.
pub fn first_match<'r>(rules: &'r [Rule], s: &Subject<'_>) -> Option<&'r Rule> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
    sorted.into_iter().find(|r| r.matcher.matches(s))
}

/// The `(name, value)` pairs of a URL's query (at most 50), for `landing_param` rules:
/// decoded from the text between `?` and `#` as a form (`+` is a space), without parsing the
/// URL, and borrowed where nothing is encoded. Only a rule with a `landing_param` condition
/// decodes them, once its other conditions matched.
fn landing_pairs(url: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let url = url.get(..url.len().min(4096)).unwrap_or("");
    let before_fragment = url.split('#').next().unwrap_or_default();
    let query = before_fragment.split_once('?').map_or("", |(_, q)| q);
    crate::traffic::form_pairs(query).take(50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_pairs_are_the_query_decoded_without_the_fragment() {
        let pairs = |u: &str| {
            landing_pairs(u)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs("https://shop.example/a?utm_source=avito&q=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD+red&x#frag?y=1"),
            [("utm_source", "avito"), ("q", "диван red"), ("x", "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(
            pairs("/landing?gclid=abc")[0],
            ("gclid".to_owned(), "abc".to_owned())
        );
        assert!(pairs("https://shop.example/a#x?utm_source=avito").is_empty());
        assert!(pairs("https://shop.example/").is_empty());
        let many = "k=v&".repeat(80);
        assert_eq!(pairs(&format!("https://shop.example/?{many}")).len(), 50);
    }

    fn subject(landing_url: &str) -> Subject<'_> {
        Subject {
            source: "avito",
            medium: "referral",
            campaign: Some("spring_sale"),
            referrer_domain: Some("m.avito.ru"),
            landing_path: "/promo/a",
            landing_url,
            channel: Channel::Referral,
        }
    }

    fn rule(id: &str, priority: i64, m: RuleMatch, action: RuleAction) -> Rule {
        Rule {
            id: id.into(),
            priority,
            matcher: m,
            action,
        }
    }

    #[test]
    fn conditions() {
        // Decoded as a form; what follows the fragment is not the query.
        let s = subject(
            "https://shop.example/promo/a?from=bill&q=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD+red#x?from=tv",
        );
        let m = |m: RuleMatch| m.matches(&s);
        assert!(m(RuleMatch {
            utm_source: Some("AVITO".into()),
            ..Default::default()
        }));
        assert!(!m(RuleMatch {
            utm_source: Some("yandex".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            utm_campaign: Some("spring_*".into()),
            ..Default::default()
        }));
        assert!(!m(RuleMatch {
            utm_campaign: Some("autumn*".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            referrer_domain: Some("avito.ru".into()),
            ..Default::default()
        }));
        assert!(!m(RuleMatch {
            referrer_domain: Some("vito.ru".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            landing_path: Some("/promo".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            landing_param: Some("from".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            landing_param: Some("from=bill".into()),
            ..Default::default()
        }));
        assert!(!m(RuleMatch {
            landing_param: Some("from=tv".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            landing_param: Some("q=диван red".into()),
            ..Default::default()
        }));
        assert!(m(RuleMatch {
            channel: Some(Channel::Referral),
            ..Default::default()
        }));
        assert!(!m(RuleMatch {
            channel: Some(Channel::Referral),
            utm_medium: Some("cpc".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn priority_order_decides() {
        let s = subject("https://shop.example/promo/a");
        let rules = vec![
            rule(
                "b",
                20,
                RuleMatch {
                    channel: Some(Channel::Referral),
                    ..Default::default()
                },
                RuleAction::Pool("p".into()),
            ),
            rule(
                "a",
                10,
                RuleMatch {
                    utm_source: Some("avito".into()),
                    ..Default::default()
                },
                RuleAction::Number("n".into()),
            ),
            rule(
                "c",
                5,
                RuleMatch {
                    utm_source: Some("vk".into()),
                    ..Default::default()
                },
                RuleAction::NoSwap,
            ),
        ];
        assert_eq!(first_match(&rules, &s).map(|r| r.id.as_str()), Some("a"));
    }

    #[test]
    fn validation_names_fields() {
        let e = RuleMatch::default().validate().unwrap_err();
        assert_eq!(e.0[0].field, "match");
        let e = RuleMatch {
            landing_path: Some("promo".into()),
            referrer_domain: Some("bad domain".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["match.referrer_domain", "match.landing_path"]);
    }
}
