//! Device, browser and OS from a User-Agent, and whether it is a bot.

use std::collections::HashMap;

use serde::Serialize;

/// Longest User-Agent looked at; real ones are a few hundred bytes.
const MAX_UA_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    Unknown,
}

impl DeviceKind {
    /// The name stored with a session (as it serialises).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub kind: DeviceKind,
    /// "Chrome", "Yandex Browser", "Safari", "Firefox", ... or "" when unknown.
    pub browser: String,
    /// "Windows 10", "Android", "iOS", "Mac OSX", ... or "" when unknown.
    pub os: String,
    pub is_bot: bool,
}

/// Lowercase markers of crawlers, previewers, HTTP libraries and automated browsers.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "spider",
    "crawl",
    "slurp",
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "lighthouse",
    "pagespeed",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "axios",
    "node-fetch",
    "httpclient",
    "libwww-perl",
    "scrapy",
    "yandexbot",
    "yandexmetrika",
    "googlebot",
    "bingbot",
    "mail.ru_bot",
    "facebookexternalhit",
    "telegrambot",
    "whatsapp",
    "vkshare",
    "preview",
];

/// Lowercase UA fragments that contain a marker but are people's devices
/// (Cubot phones contain "bot").
const NOT_BOT_FRAGMENTS: &[&str] = &["cubot"];

/// User-Agents remembered with what they parse to. A site's visitors send a few hundred
/// distinct ones over and over, and parsing one takes longer than the rest of classifying
/// a visit.
const UA_CACHE: usize = 4096;

static PARSED: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Device>>> =
    std::sync::LazyLock::new(Default::default);

/// Name the device, browser and OS of a User-Agent, and tell bots from people.
///
/// An empty User-Agent is a bot: every browser sends one.
pub fn parse_user_agent(ua: &str) -> Device {
    let ua = clip(ua.trim(), MAX_UA_BYTES);
    if let Ok(cache) = PARSED.lock() {
        if let Some(d) = cache.get(ua) {
            return d.clone();
        }
    }
    let device = parse(ua);
    if let Ok(mut cache) = PARSED.lock() {
        if cache.len() >= UA_CACHE {
            cache.clear();
        }
        cache.insert(ua.to_owned(), device.clone());
    }
    device
}

fn parse(ua: &str) -> Device {
    if ua.is_empty() {
        return Device {
            kind: DeviceKind::Bot,
            browser: String::new(),
            os: String::new(),
            is_bot: true,
        };
    }
    let parsed = woothee::parser::Parser::new().parse(ua);
    let known = |s: &str| {
        if s.is_empty() || s == woothee::woothee::VALUE_UNKNOWN {
            String::new()
        } else {
            s.to_owned()
        }
    };
    let (category, w_browser, w_os) = match &parsed {
        Some(r) => (r.category, known(r.name), known(r.os)),
        None => ("", String::new(), String::new()),
    };

    let lower = ua.to_ascii_lowercase();
    let is_bot = category == "crawler" || has_bot_marker(&lower);

    let browser = browser_override(ua).map_or(w_browser, str::to_owned);
    let os = match w_os.as_str() {
        "iPhone" | "iPad" | "iPod" => "iOS".to_owned(),
        _ => w_os,
    };

    let kind = if is_bot {
        DeviceKind::Bot
    } else {
        match category {
            "smartphone" | "mobilephone" => {
                if is_tablet(ua, &lower) {
                    DeviceKind::Tablet
                } else {
                    DeviceKind::Mobile
                }
            }
            "pc" if is_tablet(ua, &lower) => DeviceKind::Tablet,
            "pc" => DeviceKind::Desktop,
            _ => DeviceKind::Unknown,
        }
    };
    Device {
        kind,
        browser,
        os,
        is_bot,
    }
}

fn has_bot_marker(lower: &str) -> bool {
    BOT_MARKERS.iter().any(|m| {
        lower.match_indices(m).any(|(at, _)| {
            // A marker inside a known human fragment ("cubot") does not count.
            !NOT_BOT_FRAGMENTS.iter().any(|f| {
                f.contains(m)
                    && lower
                        .match_indices(f)
                        .any(|(fat, _)| fat <= at && at < fat + f.len())
            })
        })
    })
}

/// iPads, Android tablets (Android without "Mobile"), Firefox's "Tablet" token.
fn is_tablet(ua: &str, lower: &str) -> bool {
    ua.contains("iPad")
        || lower.contains("tablet")
        || (ua.contains("Android") && !ua.contains("Mobile"))
}

/// Browsers woothee does not name (or names after the engine they are built on).
fn browser_override(ua: &str) -> Option<&'static str> {
    const RULES: &[(&[&str], &str)] = &[
        (&["YaBrowser/", "YaSearchBrowser/"], "Yandex Browser"),
        (&["Edg/", "EdgA/", "EdgiOS/", "Edge/"], "Edge"),
        (&["OPR/", "OPT/", "OPiOS/", "Opera/"], "Opera"),
        (&["SamsungBrowser/"], "Samsung Internet"),
        (&["MiuiBrowser/"], "MIUI Browser"),
        (&["Atom/"], "Atom"),
        (&["CriOS/"], "Chrome"),
        (&["FxiOS/"], "Firefox"),
    ];
    RULES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| ua.contains(n)))
        .map(|(_, name)| *name)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip(s: &str, max: usize) -> &str {
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
mod tests {
    use super::*;

    #[test]
    fn device_kinds_are_stored_as_they_serialise() {
        for kind in [
            DeviceKind::Desktop,
            DeviceKind::Mobile,
            DeviceKind::Tablet,
            DeviceKind::Bot,
            DeviceKind::Unknown,
        ] {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Safari/537.36";
    const YABROWSER_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36";
    const YABROWSER_ANDROID: &str = "Mozilla/5.0 (Linux; arm_64; Android 12; 2201117TY) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.128 YaBrowser/24.4.3.43.00 SA/3 Mobile Safari/537.36";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15";
    const EDGE_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51";
    const OPERA_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0";
    const SAMSUNG_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36";
    const CHROME_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1";
    const FIREFOX_ANDROID_TABLET: &str =
        "Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0";
    const CUBOT_PHONE: &str = "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const GOOGLEBOT_SMARTPHONE: &str = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.78 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const YANDEXBOT: &str = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)";
    const YANDEX_METRIKA: &str =
        "Mozilla/5.0 (compatible; YandexMetrika/2.0; +http://yandex.com/bots yabs01)";
    const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36";
    const LIGHTHOUSE: &str = "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse";
    const TELEGRAM_PREVIEW: &str = "TelegramBot (like TwitterBot)";
    const WHATSAPP_PREVIEW: &str = "WhatsApp/2.23.20.0";
    const FB_PREVIEW: &str =
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)";

    fn dev(kind: DeviceKind, browser: &str, os: &str, is_bot: bool) -> Device {
        Device {
            kind,
            browser: browser.to_owned(),
            os: os.to_owned(),
            is_bot,
        }
    }

    #[test]
    fn desktop_browsers() {
        assert_eq!(
            parse_user_agent(CHROME_WINDOWS),
            dev(DeviceKind::Desktop, "Chrome", "Windows 10", false)
        );
        assert_eq!(
            parse_user_agent(FIREFOX_LINUX),
            dev(DeviceKind::Desktop, "Firefox", "Linux", false)
        );
        assert_eq!(
            parse_user_agent(SAFARI_MAC),
            dev(DeviceKind::Desktop, "Safari", "Mac OSX", false)
        );
    }

    #[test]
    fn phones() {
        assert_eq!(
            parse_user_agent(SAFARI_IPHONE),
            dev(DeviceKind::Mobile, "Safari", "iOS", false)
        );
        assert_eq!(
            parse_user_agent(CHROME_ANDROID_PHONE),
            dev(DeviceKind::Mobile, "Chrome", "Android", false)
        );
        assert_eq!(
            parse_user_agent(CHROME_IOS),
            dev(DeviceKind::Mobile, "Chrome", "iOS", false)
        );
    }

    #[test]
    fn tablets() {
        assert_eq!(
            parse_user_agent(SAFARI_IPAD),
            dev(DeviceKind::Tablet, "Safari", "iOS", false)
        );
        assert_eq!(
            parse_user_agent(CHROME_ANDROID_TABLET),
            dev(DeviceKind::Tablet, "Chrome", "Android", false)
        );
        let ff = parse_user_agent(FIREFOX_ANDROID_TABLET);
        assert_eq!(
            (ff.kind, ff.browser.as_str()),
            (DeviceKind::Tablet, "Firefox")
        );
    }

    #[test]
    fn browsers_woothee_misnames() {
        assert_eq!(
            parse_user_agent(YABROWSER_WINDOWS),
            dev(DeviceKind::Desktop, "Yandex Browser", "Windows 10", false)
        );
        assert_eq!(
            parse_user_agent(YABROWSER_ANDROID),
            dev(DeviceKind::Mobile, "Yandex Browser", "Android", false)
        );
        assert_eq!(
            parse_user_agent(EDGE_WINDOWS),
            dev(DeviceKind::Desktop, "Edge", "Windows 10", false)
        );
        assert_eq!(
            parse_user_agent(OPERA_WINDOWS),
            dev(DeviceKind::Desktop, "Opera", "Windows 10", false)
        );
        assert_eq!(
            parse_user_agent(SAMSUNG_PHONE),
            dev(DeviceKind::Mobile, "Samsung Internet", "Android", false)
        );
    }

    #[test]
    fn search_engine_crawlers() {
        let g = parse_user_agent(GOOGLEBOT);
        assert_eq!((g.kind, g.is_bot), (DeviceKind::Bot, true));
        assert_eq!(g.browser, "Googlebot");
        let gs = parse_user_agent(GOOGLEBOT_SMARTPHONE);
        assert_eq!((gs.kind, gs.is_bot), (DeviceKind::Bot, true));
        let y = parse_user_agent(YANDEXBOT);
        assert_eq!((y.kind, y.is_bot), (DeviceKind::Bot, true));
        let m = parse_user_agent(YANDEX_METRIKA);
        assert_eq!((m.kind, m.is_bot), (DeviceKind::Bot, true));
    }

    #[test]
    fn automation_and_libraries() {
        for ua in [
            HEADLESS,
            LIGHTHOUSE,
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Python-urllib/3.11",
            "Go-http-client/2.0",
            "Java/17.0.2",
            "okhttp/4.12.0",
            "axios/1.6.8",
            "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
            "Apache-HttpClient/4.5.14 (Java/17.0.8)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 PhantomJS/2.1.1",
            "Mozilla/5.0 (compatible; Mail.RU_Bot/2.0; +https://help.mail.ru/webmaster/indexing/robots)",
            "Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "Mozilla/5.0 (Linux; Android 11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 Google-PageSpeed Insights",
            TELEGRAM_PREVIEW,
            WHATSAPP_PREVIEW,
            FB_PREVIEW,
        ] {
            let d = parse_user_agent(ua);
            assert!(d.is_bot, "{ua}");
            assert_eq!(d.kind, DeviceKind::Bot, "{ua}");
        }
        let h = parse_user_agent(HEADLESS);
        assert_eq!(h.os, "Linux");
    }

    #[test]
    fn empty_and_blank_are_bots() {
        let empty = dev(DeviceKind::Bot, "", "", true);
        assert_eq!(parse_user_agent(""), empty);
        assert_eq!(parse_user_agent("   "), empty);
    }

    #[test]
    fn cubot_phone_is_a_person() {
        let d = parse_user_agent(CUBOT_PHONE);
        assert_eq!(d, dev(DeviceKind::Mobile, "Chrome", "Android", false));
        // ... but a Cubot phone running a headless browser is still caught.
        assert!(parse_user_agent(&format!("{CUBOT_PHONE} HeadlessChrome")).is_bot);
        assert!(parse_user_agent("cubot crawler").is_bot);
    }

    #[test]
    fn unknown_and_garbage() {
        let d = parse_user_agent("something odd");
        assert_eq!(d, dev(DeviceKind::Unknown, "", "", false));
        let huge = "Mozilla/5.0 ".repeat(10_000);
        let d = parse_user_agent(&huge);
        assert!(!d.is_bot);
        let multi = format!("{}é{}", "a".repeat(MAX_UA_BYTES - 1), "b".repeat(10));
        assert_eq!(parse_user_agent(&multi).kind, DeviceKind::Unknown);
        let odd = parse_user_agent("\u{0}\u{ffff}💥");
        assert_eq!(odd, dev(DeviceKind::Unknown, "", "", false));
    }

    #[test]
    fn serializes_kind_in_snake_case() {
        let json = serde_json::to_value(parse_user_agent(SAFARI_IPAD)).unwrap_or_default();
        assert_eq!(json["kind"], "tablet");
        assert_eq!(json["os"], "iOS");
        assert_eq!(json["is_bot"], false);
    }
}
