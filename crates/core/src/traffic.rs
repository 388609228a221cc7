//! Where a visit came from (channel, source, campaign, keyword) and what it ran on
//! (device, browser, OS, bot or not).
//!
//! [`classify`] reads what the snippet reports about the page view that starts a session
//! (landing URL, `document.referrer`) the way a marketer expects from GA or Metrika:
//! UTM parameters first, then ad click ids, then the referrer. [`parse_user_agent`] names
//! the device, browser and OS and tells bots and headless browsers from people.
//!
//! Everything here is total: any input, however malformed or huge, gives an answer.

mod device;

pub use device::{parse_user_agent, Device, DeviceKind};

use std::borrow::Cow;

use serde::Serialize;
use url::Url;

use crate::domain::{Channel, Domain};

/// Longest landing URL kept, in characters.
pub const MAX_URL_CHARS: usize = 2000;
/// Longest campaign, content or keyword kept, in characters.
pub const MAX_UTM_CHARS: usize = 200;
/// Longest source or medium kept, in characters.
pub const MAX_SOURCE_CHARS: usize = 100;
/// Longest click id kept; a longer value is not a real click id and is dropped.
pub const MAX_CLICK_ID_CHARS: usize = 500;
/// How much of a URL or referrer is looked at (bounds the work on absurd inputs).
const MAX_INPUT_BYTES: usize = 16 * 1024;

pub const DIRECT_SOURCE: &str = "(direct)";
pub const NO_MEDIUM: &str = "(none)";
/// Source of a visit whose UTM tags name a medium but no source.
pub const NOT_SET: &str = "(not set)";

/// What the script reports about a page view that starts a session.
#[derive(Debug, Clone, Copy)]
pub struct Touch<'a> {
    /// Full landing URL (`location.href`).
    pub url: &'a str,
    /// `document.referrer`, may be empty.
    pub referrer: Option<&'a str>,
    /// The site's own domains: a referrer on one of them is internal navigation.
    pub site_domains: &'a [Domain],
}

/// Channel, source, medium, campaign and the rest of a session's first touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    pub channel: Channel,
    /// Lowercase: "google", "yandex", "avito", "vk", "(direct)", "news.example.com".
    pub source: String,
    /// Lowercase: "cpc", "organic", "referral", "social", "email", "(none)".
    pub medium: String,
    pub campaign: Option<String>,
    pub content: Option<String>,
    /// `utm_term`, or the search query from a search engine referrer when it has one.
    pub keyword: Option<String>,
    /// Host of the referrer (lowercase, punycode, without "www."), internal ones included.
    pub referrer_domain: Option<String>,
    /// The landing URL as given (trimmed, at most [`MAX_URL_CHARS`] characters).
    pub landing_url: String,
    /// Path of the landing URL ("/" if none), as sent (percent-encoded).
    pub landing_path: String,
    pub gclid: Option<String>,
    pub yclid: Option<String>,
    pub fbclid: Option<String>,
}

/// Classify the first page view of a session.
pub fn classify(touch: &Touch<'_>) -> Attribution {
    let url = clip_bytes(touch.url.trim(), MAX_INPUT_BYTES);
    let landing = parse_landing(url);
    let params = QueryParams::of(url);

    let utm = |name: &str, max: usize| params.get(name).map(|v| truncate(v, max).to_owned());
    let campaign = utm("utm_campaign", MAX_UTM_CHARS);
    let content = utm("utm_content", MAX_UTM_CHARS);
    let term = utm("utm_term", MAX_UTM_CHARS);
    let utm_source = utm("utm_source", MAX_SOURCE_CHARS).map(|s| s.to_lowercase());
    let utm_medium = utm("utm_medium", MAX_SOURCE_CHARS).map(|s| s.to_lowercase());

    let click_id = |name: &str| {
        params
            .get(name)
            .filter(|v| v.chars().count() <= MAX_CLICK_ID_CHARS)
            .map(str::to_owned)
    };
    let gclid = click_id("gclid");
    let yclid = click_id("yclid");
    let fbclid = click_id("fbclid");

    let referrer = touch
        .referrer
        .map(|r| clip_bytes(r.trim(), MAX_INPUT_BYTES))
        .and_then(parse_referrer);
    let referrer_domain = referrer.as_ref().map(|r| r.host.clone());
    let internal = referrer.as_ref().is_some_and(|r| {
        touch.site_domains.iter().any(|d| d.covers(&r.host))
            || landing.host.as_deref() == Some(r.host.as_str())
    });
    let known = match &referrer {
        Some(r) if !internal => Some(r.classify()),
        _ => None,
    };

    let (channel, source, medium) = if let Some(source) = utm_source {
        let medium = utm_medium.unwrap_or_else(|| NO_MEDIUM.to_owned());
        (channel_for_medium(&source, &medium), source, medium)
    } else if let Some((channel, source, medium)) = click_source(&params) {
        (channel, source.to_owned(), medium.to_owned())
    } else if let Some(medium) = utm_medium {
        let source = known
            .as_ref()
            .map_or_else(|| NOT_SET.to_owned(), |k| k.source.clone());
        (channel_for_medium(&source, &medium), source, medium)
    } else if let Some(k) = &known {
        (k.channel, k.source.clone(), k.medium.to_owned())
    } else {
        (
            Channel::Direct,
            DIRECT_SOURCE.to_owned(),
            NO_MEDIUM.to_owned(),
        )
    };

    let search_query = known.and_then(|k| k.keyword);
    Attribution {
        channel,
        source,
        medium,
        campaign,
        content,
        keyword: term.or(search_query),
        referrer_domain,
        landing_url: truncate(url, MAX_URL_CHARS).to_owned(),
        landing_path: landing.path,
        gclid,
        yclid,
        fbclid,
    }
}

/// Query parameter of a URL (percent-decoded, `+` as space, trimmed), None if absent or
/// empty. Works on absolute and relative URLs; the fragment is not searched. The name is
/// matched exactly first, then ignoring ASCII case ("UTM_SOURCE"); a first empty value
/// does not hide a later non-empty one.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    QueryParams::of(clip_bytes(url.trim(), MAX_INPUT_BYTES))
        .get(name)
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------
// Landing URL and query parameters

struct Landing {
    host: Option<String>,
    path: String,
}

/// Host and path of a landing URL, also when it is relative or lacks a scheme.
fn parse_landing(url: &str) -> Landing {
    if let Some(p) = PlainUrl::split(url) {
        return Landing::of(Some(p.host), p.path);
    }
    let parsed = if url.starts_with("//") {
        Url::parse(&format!("http:{url}")).ok()
    } else {
        match Url::parse(url) {
            Ok(u) => Some(u),
            // "site.ru/page": a host without a scheme.
            Err(url::ParseError::RelativeUrlWithoutBase) if looks_like_host_first(url) => {
                Url::parse(&format!("http://{url}")).ok()
            }
            Err(_) => None,
        }
    };
    match parsed {
        Some(u) if u.host_str().is_some() => {
            let path = if u.cannot_be_a_base() { "" } else { u.path() };
            Landing::of(u.host_str(), path)
        }
        _ => {
            let end = url.find(['?', '#']).unwrap_or(url.len());
            let raw = &url[..end];
            Landing::of(None, if raw.starts_with('/') { raw } else { "" })
        }
    }
}

impl Landing {
    /// A landing page on `host` (as written) at `path` ("/" when there is none).
    fn of(host: Option<&str>, path: &str) -> Self {
        Self {
            host: host.map(normalize_host),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                truncate(path, MAX_URL_CHARS).to_owned()
            },
        }
    }
}

/// "site.ru/x", "site.ru:8080/x", "site.ru?x": a dotted host-looking first segment.
fn looks_like_host_first(s: &str) -> bool {
    let first = s.split(['/', '?', '#']).next().unwrap_or_default();
    let host = first.split(':').next().unwrap_or_default();
    host.contains('.')
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.chars().any(|c| c.is_whitespace() || c == '@')
}

/// The decoded `name=value` pairs of a URL's query string (trimmed; an `amp;` before a
/// name dropped), borrowed from the URL where nothing was encoded.
struct QueryParams<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> QueryParams<'a> {
    fn of(url: &'a str) -> Self {
        let before_fragment = url.split('#').next().unwrap_or_default();
        let Some((_, query)) = before_fragment.split_once('?') else {
            return Self(Vec::new());
        };
        let pairs = form_pairs(query)
            .map(|(k, v)| {
                // "&amp;utm_medium=cpc": an HTML-escaped URL pasted into an ad cabinet.
                let k = map_cow(k, |k| k.strip_prefix("amp;").unwrap_or(k).trim());
                (k, map_cow(v, str::trim))
            })
            .collect();
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        let found = |exact: bool| {
            self.0.iter().find(|(k, v)| {
                !v.is_empty()
                    && if exact {
                        k == name
                    } else {
                        k.eq_ignore_ascii_case(name)
                    }
            })
        };
        found(true).or_else(|| found(false)).map(|(_, v)| &**v)
    }
}

/// `f` of the text, borrowed when it was.
fn map_cow(c: Cow<'_, str>, f: impl Fn(&str) -> &str) -> Cow<'_, str> {
    match c {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_owned()),
    }
}

/// The `name=value` pairs of a query string decoded as a form (`+` is a space), exactly as
/// `form_urlencoded::parse` decodes them, but borrowed from `query` where a pair holds
/// nothing to decode (no `+`, no `%`): most pairs, and the decoder checks every pair's
/// text for valid UTF-8 again, which a `&str` is already.
pub(crate) fn form_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        if pair.bytes().any(|b| b == b'+' || b == b'%') {
            if let Some((k, v)) = url::form_urlencoded::parse(pair.as_bytes()).next() {
                return (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned()));
            }
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (Cow::Borrowed(k), Cow::Borrowed(v))
    })
}

/// The parts of an absolute `http(s)` URL with nothing in it that the `url` crate would
/// change or refuse: printable ASCII, a lowercase host name (no IP address, no `xn--`
/// label, no user, no `%`), a port of digits, a path with no dot segments and no character
/// the crate percent-encodes. For such a URL its parts are the text as given, which is
/// what browsers send nearly always; splitting it costs under half the instructions of a
/// parse (`crates/loadgen/visit_cost.sh`). Anything else is left to the `url` crate.
/// (`plain_urls_split_as_the_url_crate_parses`, in the tests, holds the two to the same
/// parts.)
struct PlainUrl<'a> {
    host: &'a str,
    /// Empty, or from the `/` on, without the query.
    path: &'a str,
    /// Between the `?` and the fragment, as written.
    query: Option<&'a str>,
}

impl<'a> PlainUrl<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))?;
        // The fragment is not looked at; everything before it must be printable ASCII.
        let query_end = rest.find('#').unwrap_or(rest.len());
        let head = &rest[..query_end];
        if !head.bytes().all(|c| c.is_ascii_graphic() && c != b'\\') {
            return None;
        }
        let path_end = head.find('?').unwrap_or(query_end);
        let auth_end = head[..path_end].find('/').unwrap_or(path_end);
        let (host, port) = match head[..auth_end].split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (&head[..auth_end], None),
        };
        if let Some(p) = port {
            // 1 to 5 digits, at most 65535.
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            if p.parse::<u32>().ok()? > 65_535 {
                return None;
            }
        }
        let path = &head[auth_end..path_end];
        if !plain_host(host) || !plain_path(path) {
            return None;
        }
        Some(Self {
            host,
            path,
            query: (path_end < query_end).then(|| &head[path_end + 1..]),
        })
    }
}

/// A lowercase DNS name the `url` crate keeps as it is: labels of 1 to 63 of `a-z`, `0-9`
/// and inner single `-` (no `xn--`), the last one starting with a letter (not an IP
/// address), at most 253 characters, and perhaps a final dot.
fn plain_host(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).as_bytes();
    let last_start = name.iter().rposition(|&c| c == b'.').map_or(0, |i| i + 1);
    if name.len() > 253 || !name.get(last_start).is_some_and(u8::is_ascii_lowercase) {
        return false;
    }
    let (mut label, mut prev) = (0, b'.');
    for &c in name {
        match c {
            b'.' if label > 0 && prev != b'-' => label = 0,
            b'-' if label > 0 && prev != b'-' => label += 1,
            b'a'..=b'z' | b'0'..=b'9' => label += 1,
            _ => return false,
        }
        if label > 63 {
            return false;
        }
        prev = c;
    }
    label > 0 && prev != b'-'
}

/// A path the `url` crate keeps as it is: no character it percent-encodes, no dot segment
/// (`.`, `..`, `%2e` ...).
fn plain_path(path: &str) -> bool {
    let b = path.as_bytes();
    (0..b.len()).all(|i| {
        let c = b[i];
        let dot = c == b'.' && i > 0 && b[i - 1] == b'/';
        let encoded_dot = c == b'%' && matches!(b.get(i + 1..i + 3), Some(b"2e" | b"2E"));
        PLAIN_PATH_BYTES[usize::from(c)] && !dot && !encoded_dot
    })
}

/// The bytes of a path that the `url` crate keeps as they are.
const PLAIN_PATH_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'%'
            );
        b += 1;
    }
    t
};

/// Channel, source and medium from an ad click id, when the URL carries one.
fn click_source(params: &QueryParams) -> Option<(Channel, &'static str, &'static str)> {
    let has = |name: &str| params.get(name).is_some();
    if has("gclid") || has("gbraid") || has("wbraid") {
        Some((Channel::PaidSearch, "google", "cpc"))
    } else if has("yclid") {
        // Not `ysclid`: Yandex adds that one to organic result clicks too.
        Some((Channel::PaidSearch, "yandex", "cpc"))
    } else if has("msclkid") {
        Some((Channel::PaidSearch, "bing", "cpc"))
    } else if has("fbclid") {
        // Facebook adds fbclid to every outbound link click, ads or not.
        Some((Channel::Social, "facebook", "social"))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// UTM medium → channel

/// Channel for a tagged visit, from its medium and (for unknown mediums) its source.
fn channel_for_medium(source: &str, medium: &str) -> Channel {
    let m: String = medium
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' ' | '.'))
        .collect();
    let social_source = is_social_source(source);
    match m.as_str() {
        "social" | "socialnetwork" | "socialnetworks" | "smm" | "paidsocial" | "socialpaid"
        | "sm" => Channel::Social,
        "email" | "newsletter" | "mailing" | "mail" | "rassylka" => Channel::Email,
        "organic" => Channel::OrganicSearch,
        "referral" | "partner" | "partners" | "affiliate" => Channel::Referral,
        "offline" | "print" | "qr" | "qrcode" | "billboard" | "radio" | "tv" => Channel::Offline,
        "cpc" | "ppc" | "paidsearch" | "paid" | "cpa" | "cpm" | "cpv" | "display" | "banner"
        | "retargeting" | "context" | "contextcpc" => {
            if social_source {
                Channel::Social
            } else {
                Channel::PaidSearch
            }
        }
        _ if social_source => Channel::Social,
        "(none)" | "none" if is_search_source(source) => Channel::OrganicSearch,
        _ => Channel::Referral,
    }
}

const SOCIAL_SOURCES: &[&str] = &[
    "vk",
    "vkontakte",
    "facebook",
    "fb",
    "instagram",
    "ig",
    "ok",
    "odnoklassniki",
    "telegram",
    "tg",
    "tiktok",
    "youtube",
    "twitter",
    "x",
    "linkedin",
    "pinterest",
    "dzen",
    "mytarget",
    "reddit",
    "whatsapp",
    "vk_ads",
    "vkads",
];

const SEARCH_SOURCES: &[&str] = &[
    "google",
    "yandex",
    "bing",
    "mail.ru",
    "duckduckgo",
    "yahoo",
    "rambler",
    "ecosia",
    "baidu",
    "seznam",
];

/// A utm_source naming a social network: a short name or one of its hosts ("vk.com").
fn is_social_source(source: &str) -> bool {
    SOCIAL_SOURCES.contains(&source) || source_host_kind(source) == Some(Channel::Social)
}

/// A utm_source naming a search engine: a short name or one of its hosts ("yandex.ru").
fn is_search_source(source: &str) -> bool {
    SEARCH_SOURCES.contains(&source) || source_host_kind(source) == Some(Channel::OrganicSearch)
}

/// The channel of a utm_source that names a known host. Every known host has a dot, so a
/// source without one ("google", most of them) is not looked up.
fn source_host_kind(source: &str) -> Option<Channel> {
    if !source.contains('.') {
        return None;
    }
    host_kind(&normalize_host(source)).map(|k| k.channel)
}

// ---------------------------------------------------------------------------------------
// Referrers

struct Referrer {
    /// Lowercase, without "www." and a trailing dot.
    host: String,
    /// An Android app's (`android-app://<package>/`), not a web page's.
    app: bool,
    /// The query, as given or as the `url` crate serialised it (they decode alike).
    query: Option<String>,
}

/// What a known external referrer means.
struct Known {
    channel: Channel,
    source: String,
    medium: &'static str,
    keyword: Option<String>,
}

/// A referrer with a host, on http(s) or an Android app; None for anything else.
fn parse_referrer(raw: &str) -> Option<Referrer> {
    if raw.is_empty() {
        return None;
    }
    if let Some(p) = PlainUrl::split(raw) {
        let host = normalize_host(p.host);
        return is_dns_sized(&host).then(|| Referrer {
            host,
            app: false,
            query: p.query.map(str::to_owned),
        });
    }
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) if raw.starts_with("//") => {
            Url::parse(&format!("http:{raw}")).ok()?
        }
        Err(_) => return None,
    };
    if !matches!(url.scheme(), "http" | "https" | "android-app") {
        return None;
    }
    let host = normalize_host(url.host_str()?);
    if !is_dns_sized(&host) {
        return None;
    }
    Some(Referrer {
        host,
        app: url.scheme() == "android-app",
        query: url.query().map(str::to_owned),
    })
}

impl Referrer {
    fn classify(&self) -> Known {
        let kind = if self.app {
            app_kind(&self.host)
        } else {
            host_kind(&self.host)
        };
        match kind {
            Some(k) => Known {
                channel: k.channel,
                source: if k.source.is_empty() {
                    truncate(&self.host, MAX_SOURCE_CHARS).to_owned()
                } else {
                    k.source.to_owned()
                },
                medium: match k.channel {
                    Channel::OrganicSearch => "organic",
                    Channel::Social => "social",
                    Channel::Email => "email",
                    _ => "referral",
                },
                keyword: k.query_param.and_then(|p| self.query(p)),
            },
            None => Known {
                channel: Channel::Referral,
                source: truncate(&self.host, MAX_SOURCE_CHARS).to_owned(),
                medium: "referral",
                keyword: None,
            },
        }
    }

    fn query(&self, name: &str) -> Option<String> {
        form_pairs(self.query.as_deref()?)
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| truncate(v.trim(), MAX_UTM_CHARS).to_owned())
    }
}

/// A recognised host: what channel it stands for and its short source name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostKind {
    channel: Channel,
    /// Short name for engines and networks; empty: the referrer host is the source.
    source: &'static str,
    /// The referrer's query parameter that carries the search phrase.
    query_param: Option<&'static str>,
}

const fn search(source: &'static str, param: &'static str) -> HostKind {
    HostKind {
        channel: Channel::OrganicSearch,
        source,
        query_param: Some(param),
    }
}

const fn social(source: &'static str) -> HostKind {
    HostKind {
        channel: Channel::Social,
        source,
        query_param: None,
    }
}

/// Webmail: the source is the mail site's host, or `name` for an app.
const fn webmail(name: Option<&'static str>) -> HostKind {
    HostKind {
        channel: Channel::Email,
        source: match name {
            Some(n) => n,
            None => "",
        },
        query_param: None,
    }
}

/// Subdomains of a Google country site that are its search.
const GOOGLE_SEARCH_PREFIXES: &[&str] = &["", "m", "images", "news", "scholar", "maps", "video"];
/// Subdomains of a Yandex country site that are its search.
const YANDEX_SEARCH_PREFIXES: &[&str] = &["", "m", "images", "video", "clck", "yandsearch"];

/// What a (normalised) referrer host stands for; None for an ordinary site.
fn host_kind(host: &str) -> Option<HostKind> {
    // Google and Yandex run a site per country: google.co.uk, yandex.com.tr ...
    if let Some(prefix) = brand_prefix(host, "google") {
        return match prefix {
            "mail" => Some(webmail(None)),
            p if GOOGLE_SEARCH_PREFIXES.contains(&p) => Some(search("google", "q")),
            _ => None,
        };
    }
    if let Some(prefix) = brand_prefix(host, "yandex") {
        return match prefix {
            "mail" => Some(webmail(None)),
            "zen" => Some(social("dzen")),
            p if YANDEX_SEARCH_PREFIXES.contains(&p) => Some(search("yandex", "text")),
            _ => None,
        };
    }
    if let Some(prefix) = brand_prefix(host, "pinterest") {
        return matches!(prefix, "" | "m" | "ru" | "in" | "uk" | "de" | "fr" | "br")
            .then_some(social("pinterest"));
    }
    let on = |domain: &str| covers(domain, host);
    let kind = match host {
        "ya.ru" | "m.ya.ru" => search("yandex", "text"),
        "go.mail.ru" | "search.mail.ru" => search("mail.ru", "q"),
        "nova.rambler.ru" | "search.rambler.ru" => search("rambler", "query"),
        "e.mail.ru"
        | "touch.mail.ru"
        | "mail.rambler.ru"
        | "outlook.live.com"
        | "outlook.office.com"
        | "outlook.office365.com" => webmail(None),
        "t.me" | "telegram.me" | "telegram.org" | "web.telegram.org" => social("telegram"),
        "t.co" => social("twitter"),
        "lnkd.in" => social("linkedin"),
        "youtu.be" => social("youtube"),
        "pin.it" => social("pinterest"),
        "wa.me" => social("whatsapp"),
        "fb.me" => social("facebook"),
        _ if on("bing.com") => search("bing", "q"),
        _ if on("duckduckgo.com") => search("duckduckgo", "q"),
        _ if on("search.yahoo.com") => search("yahoo", "p"),
        _ if on("ecosia.org") => search("ecosia", "q"),
        _ if on("baidu.com") => search("baidu", "wd"),
        _ if on("seznam.cz") && !on("email.seznam.cz") => search("seznam", "q"),
        _ if on("vk.com") || on("vk.ru") || on("vkontakte.ru") => social("vk"),
        _ if on("ok.ru") || on("odnoklassniki.ru") => social("ok"),
        _ if on("facebook.com") || on("fb.com") => social("facebook"),
        _ if on("instagram.com") => social("instagram"),
        _ if on("twitter.com") || on("x.com") => social("twitter"),
        _ if on("youtube.com") => social("youtube"),
        _ if on("linkedin.com") => social("linkedin"),
        _ if on("tiktok.com") => social("tiktok"),
        _ if on("dzen.ru") => social("dzen"),
        _ if on("reddit.com") => social("reddit"),
        _ if on("whatsapp.com") => social("whatsapp"),
        _ => return None,
    };
    Some(kind)
}

/// Android apps that send `android-app://<package>/` as the referrer.
fn app_kind(package: &str) -> Option<HostKind> {
    let kind = match package {
        "com.google.android.googlequicksearchbox" => search("google", "q"),
        "ru.yandex.searchplugin" | "com.yandex.searchapp" => search("yandex", "text"),
        "com.google.android.gm" => webmail(Some("mail.google.com")),
        "ru.mail.mailapp" => webmail(Some("e.mail.ru")),
        "ru.yandex.mail" => webmail(Some("mail.yandex.ru")),
        "com.vkontakte.android" => social("vk"),
        "ru.ok.android" => social("ok"),
        "org.telegram.messenger" | "org.telegram.messenger.web" => social("telegram"),
        "com.whatsapp" => social("whatsapp"),
        "com.facebook.katana" | "com.facebook.lite" => social("facebook"),
        "com.instagram.android" => social("instagram"),
        "com.twitter.android" => social("twitter"),
        "com.google.android.youtube" => social("youtube"),
        "com.linkedin.android" => social("linkedin"),
        "com.zhiliaoapp.musically" | "com.ss.android.ugc.trill" => social("tiktok"),
        "com.pinterest" => social("pinterest"),
        "com.reddit.frontpage" => social("reddit"),
        _ => return None,
    };
    Some(kind)
}

/// For `host` = `[prefix.]brand.<country suffix>` (google.com, google.co.uk,
/// images.google.com.tr), the prefix ("" when none); None otherwise.
fn brand_prefix<'h>(host: &'h str, brand: &str) -> Option<&'h str> {
    let labels: Vec<&str> = host.split('.').collect();
    let at = labels.iter().rposition(|l| *l == brand)?;
    let suffix = &labels[at + 1..];
    let tld = |l: &str| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
    let ok = match suffix {
        [one] => tld(one),
        [second, country] => matches!(*second, "co" | "com") && country.len() == 2 && tld(country),
        _ => false,
    };
    if !ok {
        return None;
    }
    let prefix_len = labels[..at].iter().map(|l| l.len() + 1).sum::<usize>();
    Some(host[..prefix_len].trim_end_matches('.'))
}

/// Whether `host` is `domain` or a subdomain of it (both lowercase).
fn covers(domain: &str, host: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

// ---------------------------------------------------------------------------------------
// Small string helpers

/// A host name DNS could hold: at most 253 characters, labels of 1 to 63.
fn is_dns_sized(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && host.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// Lowercase, no trailing dot, no leading "www.".
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match host.strip_prefix("www.") {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => host,
    }
}

/// At most `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> &str {
    // No more bytes than `max`: no more characters either.
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
