use super::*;

fn domains(names: &[&str]) -> Vec<Domain> {
    names.iter().filter_map(|n| Domain::parse(n).ok()).collect()
}

fn visit(url: &str, referrer: &str) -> Attribution {
    let site = domains(&["shop.ru"]);
    classify(&Touch {
        url,
        referrer: Some(referrer),
        site_domains: &site,
    })
}

/// (channel, source, medium) of a visit.
fn csm(a: &Attribution) -> (Channel, &str, &str) {
    (a.channel, a.source.as_str(), a.medium.as_str())
}

// ---- rule 1: UTM tags --------------------------------------------------------------------

#[test]
fn utm_tags_win_over_everything() {
    let a = visit(
        "https://shop.ru/catalog/sofas?utm_source=Yandex&utm_medium=CPC&utm_campaign=sofas_msk&utm_content=ad-12&utm_term=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD+%D0%BA%D1%83%D0%BF%D0%B8%D1%82%D1%8C&gclid=abc",
        "https://www.google.com/",
    );
    assert_eq!(csm(&a), (Channel::PaidSearch, "yandex", "cpc"));
    assert_eq!(a.campaign.as_deref(), Some("sofas_msk"));
    assert_eq!(a.content.as_deref(), Some("ad-12"));
    assert_eq!(a.keyword.as_deref(), Some("диван купить"));
    assert_eq!(a.referrer_domain.as_deref(), Some("google.com"));
    assert_eq!(a.landing_path, "/catalog/sofas");
    // The click id is kept even though the tags decided the source.
    assert_eq!(a.gclid.as_deref(), Some("abc"));
}

#[test]
fn utm_source_without_medium_has_medium_none() {
    let a = visit("https://shop.ru/?utm_source=avito", "");
    assert_eq!(csm(&a), (Channel::Referral, "avito", "(none)"));
    assert_eq!(a.campaign, None);
    assert_eq!(a.keyword, None);
}

#[test]
fn utm_source_is_trimmed_lowercased_and_capped() {
    let long = "A".repeat(150);
    let a = visit(
        &format!(
            "https://shop.ru/?utm_source=%20%20AvItO%20&utm_medium=+Partner+&utm_campaign={long}"
        ),
        "",
    );
    assert_eq!(csm(&a), (Channel::Referral, "avito", "partner"));
    assert_eq!(a.campaign.as_deref(), Some(long.as_str()));

    let a = visit(
        &format!(
            "https://shop.ru/?utm_source={}&utm_term={}",
            "s".repeat(300),
            "т".repeat(300)
        ),
        "",
    );
    assert_eq!(a.source, "s".repeat(MAX_SOURCE_CHARS));
    assert_eq!(a.keyword, Some("т".repeat(MAX_UTM_CHARS)));
}

#[test]
fn paid_mediums_are_paid_search() {
    for medium in [
        "cpc",
        "ppc",
        "paidsearch",
        "paid_search",
        "paid-search",
        "paid",
        "cpa",
        "cpm",
        "cpv",
        "display",
        "banner",
        "retargeting",
        "context",
        "context-cpc",
        "CPC",
    ] {
        let a = visit(
            &format!("https://shop.ru/?utm_source=yandex&utm_medium={medium}"),
            "",
        );
        assert_eq!(a.channel, Channel::PaidSearch, "{medium}");
        assert_eq!(a.medium, medium.to_lowercase());
    }
}

#[test]
fn paid_mediums_on_social_networks_are_social() {
    for source in [
        "vk",
        "vkontakte",
        "facebook",
        "fb",
        "instagram",
        "ok",
        "odnoklassniki",
        "telegram",
        "tiktok",
        "youtube",
        "twitter",
        "x",
        "linkedin",
        "pinterest",
        "dzen",
        "mytarget",
        "VK.com",
        "m.facebook.com",
    ] {
        let a = visit(
            &format!("https://shop.ru/?utm_source={source}&utm_medium=cpc&utm_campaign=spring"),
            "",
        );
        assert_eq!(a.channel, Channel::Social, "{source}");
        assert_eq!(a.source, source.to_lowercase(), "source is kept as tagged");
        assert_eq!(a.medium, "cpc");
    }
}

#[test]
fn social_mediums() {
    for medium in [
        "social",
        "social-network",
        "smm",
        "paid_social",
        "social_paid",
        "sm",
    ] {
        let a = visit(
            &format!("https://shop.ru/?utm_source=blogger&utm_medium={medium}"),
            "",
        );
        assert_eq!(a.channel, Channel::Social, "{medium}");
    }
}

#[test]
fn email_mediums() {
    for medium in [
        "email",
        "e-mail",
        "E-Mail",
        "newsletter",
        "mailing",
        "rassylka",
    ] {
        let a = visit(
            &format!("https://shop.ru/?utm_source=unisender&utm_medium={medium}"),
            "https://e.mail.ru/",
        );
        assert_eq!(a.channel, Channel::Email, "{medium}");
        assert_eq!(a.source, "unisender");
    }
}

#[test]
fn organic_referral_and_offline_mediums() {
    let a = visit("https://shop.ru/?utm_source=google&utm_medium=organic", "");
    assert_eq!(csm(&a), (Channel::OrganicSearch, "google", "organic"));
    for medium in ["referral", "partner", "affiliate"] {
        let a = visit(
            &format!("https://shop.ru/?utm_source=admitad&utm_medium={medium}"),
            "",
        );
        assert_eq!(a.channel, Channel::Referral, "{medium}");
    }
    for medium in ["offline", "print", "qr", "billboard", "radio", "tv"] {
        let a = visit(
            &format!("https://shop.ru/?utm_source=metro&utm_medium={medium}"),
            "",
        );
        assert_eq!(a.channel, Channel::Offline, "{medium}");
        assert_eq!(a.source, "metro");
    }
}

#[test]
fn unknown_mediums_fall_back_on_the_source() {
    let a = visit("https://shop.ru/?utm_source=vk&utm_medium=post", "");
    assert_eq!(csm(&a), (Channel::Social, "vk", "post"));
    let a = visit("https://shop.ru/?utm_source=instagram", "");
    assert_eq!(csm(&a), (Channel::Social, "instagram", "(none)"));
    let a = visit("https://shop.ru/?utm_source=google", "");
    assert_eq!(csm(&a), (Channel::OrganicSearch, "google", "(none)"));
    let a = visit("https://shop.ru/?utm_source=yandex.ru", "");
    assert_eq!(csm(&a), (Channel::OrganicSearch, "yandex.ru", "(none)"));
    // A search engine with an unknown medium is not organic.
    let a = visit("https://shop.ru/?utm_source=google&utm_medium=maps", "");
    assert_eq!(csm(&a), (Channel::Referral, "google", "maps"));
    let a = visit("https://shop.ru/?utm_source=avito&utm_medium=listing", "");
    assert_eq!(csm(&a), (Channel::Referral, "avito", "listing"));
}

#[test]
fn utm_medium_without_source_uses_the_referrer() {
    let a = visit(
        "https://shop.ru/?utm_medium=email&utm_campaign=may",
        "https://e.mail.ru/inbox/",
    );
    assert_eq!(csm(&a), (Channel::Email, "e.mail.ru", "email"));
    assert_eq!(a.campaign.as_deref(), Some("may"));
    let a = visit("https://shop.ru/?utm_medium=email&utm_campaign=may", "");
    assert_eq!(csm(&a), (Channel::Email, "(not set)", "email"));
}

#[test]
fn utm_names_are_found_ignoring_case_and_html_escaping() {
    let a = visit(
        "https://shop.ru/?UTM_SOURCE=vk&amp;utm_medium=cpc&amp;utm_campaign=x",
        "",
    );
    assert_eq!(csm(&a), (Channel::Social, "vk", "cpc"));
    assert_eq!(a.campaign.as_deref(), Some("x"));
}

#[test]
fn empty_utm_source_is_ignored() {
    let a = visit(
        "https://shop.ru/?utm_source=&utm_medium=&utm_campaign=",
        "https://www.bing.com/",
    );
    assert_eq!(csm(&a), (Channel::OrganicSearch, "bing", "organic"));
    assert_eq!(a.campaign, None);
}

// ---- rule 2: click ids -------------------------------------------------------------------

#[test]
fn gclid_gbraid_wbraid_are_google_ads() {
    for param in ["gclid", "gbraid", "wbraid"] {
        let a = visit(
            &format!("https://shop.ru/landing?{param}=Cj0KCQjw-_mvBhDwARIsAA"),
            "https://www.google.com/",
        );
        assert_eq!(csm(&a), (Channel::PaidSearch, "google", "cpc"), "{param}");
        assert_eq!(a.referrer_domain.as_deref(), Some("google.com"));
    }
    let a = visit("https://shop.ru/?gclid=Cj0KCQjw-_mvBhDwARIsAA", "");
    assert_eq!(a.gclid.as_deref(), Some("Cj0KCQjw-_mvBhDwARIsAA"));
}

#[test]
fn yclid_is_yandex_direct_but_ysclid_is_organic() {
    let a = visit(
        "https://shop.ru/?yclid=2873456293847562398",
        "https://yandex.ru/",
    );
    assert_eq!(csm(&a), (Channel::PaidSearch, "yandex", "cpc"));
    assert_eq!(a.yclid.as_deref(), Some("2873456293847562398"));

    let a = visit(
        "https://shop.ru/sofas?ysclid=lv1x2y3z4a567890123",
        "https://yandex.ru/",
    );
    assert_eq!(csm(&a), (Channel::OrganicSearch, "yandex", "organic"));
    assert_eq!(a.yclid, None);
}

#[test]
fn fbclid_is_facebook_social() {
    let a = visit(
        "https://shop.ru/?fbclid=IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgE",
        "https://l.facebook.com/",
    );
    assert_eq!(csm(&a), (Channel::Social, "facebook", "social"));
    assert_eq!(
        a.fbclid.as_deref(),
        Some("IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgE")
    );
    // fbclid with utm tags: the tags decide, the id is kept.
    let a = visit(
        "https://shop.ru/?utm_source=instagram&utm_medium=paid_social&fbclid=Iw1",
        "",
    );
    assert_eq!(csm(&a), (Channel::Social, "instagram", "paid_social"));
    assert_eq!(a.fbclid.as_deref(), Some("Iw1"));
}

#[test]
fn msclkid_is_bing_ads() {
    let a = visit(
        "https://shop.ru/?msclkid=5b1d7e0c3f4a1b2c3d4e5f60718293a4",
        "",
    );
    assert_eq!(csm(&a), (Channel::PaidSearch, "bing", "cpc"));
}

#[test]
fn click_id_precedence_and_keeping_all_ids() {
    let a = visit("https://shop.ru/?fbclid=F&yclid=Y&gclid=G", "");
    assert_eq!(csm(&a), (Channel::PaidSearch, "google", "cpc"));
    assert_eq!(
        (a.gclid.as_deref(), a.yclid.as_deref(), a.fbclid.as_deref()),
        (Some("G"), Some("Y"), Some("F"))
    );
}

#[test]
fn openstat_and_from_are_ignored() {
    let a = visit(
        "https://shop.ru/?_openstat=ZGlyZWN0LnlhbmRleC5ydTsxMjM0NTY3OzEyMzQ1Njc4O3lhbmRleC5ydTpwcmVtaXVt&from=vk",
        "",
    );
    assert_eq!(csm(&a), (Channel::Direct, "(direct)", "(none)"));
}

#[test]
fn absurdly_long_click_ids_are_dropped() {
    let a = visit(&format!("https://shop.ru/?gclid={}", "x".repeat(600)), "");
    assert_eq!(a.gclid, None);
    // It still says the visit came from an ad click.
    assert_eq!(a.channel, Channel::PaidSearch);
}

// ---- rule 3: referrer --------------------------------------------------------------------

#[test]
fn no_referrer_is_direct() {
    let site = domains(&["shop.ru"]);
    for referrer in [None, Some(""), Some("   ")] {
        let a = classify(&Touch {
            url: "https://shop.ru/",
            referrer,
            site_domains: &site,
        });
        assert_eq!(csm(&a), (Channel::Direct, "(direct)", "(none)"));
        assert_eq!(a.referrer_domain, None);
        assert_eq!(a.keyword, None);
    }
}

#[test]
fn unparsable_referrers_are_direct() {
    for referrer in [
        "not a url",
        "about:blank",
        "http://",
        "javascript:alert(1)",
        "file:///C:/Users/me/page.html",
        "chrome-extension://abcdef/popup.html",
        "https://exa mple.com/",
        "%%%",
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            csm(&a),
            (Channel::Direct, "(direct)", "(none)"),
            "{referrer}"
        );
        assert_eq!(a.referrer_domain, None, "{referrer}");
    }
}

#[test]
fn internal_referrers_are_direct() {
    let site = domains(&["shop.ru", "shop-msk.ru"]);
    for referrer in [
        "https://shop.ru/catalog",
        "https://www.shop.ru/",
        "https://m.shop.ru/cart",
        "http://SHOP-MSK.RU:8080/x",
        "https://shop.ru./",
    ] {
        let a = classify(&Touch {
            url: "https://shop.ru/sofas",
            referrer: Some(referrer),
            site_domains: &site,
        });
        assert_eq!(a.channel, Channel::Direct, "{referrer}");
        assert_eq!(a.source, "(direct)");
        assert!(a.referrer_domain.is_some(), "{referrer}");
    }
    // "notshop.ru" is not a subdomain of shop.ru.
    let a = classify(&Touch {
        url: "https://shop.ru/",
        referrer: Some("https://notshop.ru/"),
        site_domains: &site,
    });
    assert_eq!(csm(&a), (Channel::Referral, "notshop.ru", "referral"));
}

#[test]
fn the_landing_host_is_internal_even_without_site_domains() {
    let a = classify(&Touch {
        url: "https://www.landing.kz/promo",
        referrer: Some("https://landing.kz/"),
        site_domains: &[],
    });
    assert_eq!(csm(&a), (Channel::Direct, "(direct)", "(none)"));
    assert_eq!(a.referrer_domain.as_deref(), Some("landing.kz"));
}

#[test]
fn google_in_every_country() {
    for referrer in [
        "https://www.google.com/",
        "https://www.google.ru/",
        "https://www.google.kz/",
        "https://www.google.co.uk/",
        "https://www.google.com.tr/",
        "https://www.google.com.ua/",
        "https://google.de/",
        "https://images.google.com/",
        "https://WWW.GOOGLE.COM:443/",
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            csm(&a),
            (Channel::OrganicSearch, "google", "organic"),
            "{referrer}"
        );
    }
    let a = visit("https://shop.ru/", "https://www.google.co.uk/");
    assert_eq!(a.referrer_domain.as_deref(), Some("google.co.uk"));
}

#[test]
fn lookalikes_of_search_engines_are_referrals() {
    for (referrer, source) in [
        ("https://google.evilsite.com/", "google.evilsite.com"),
        ("https://mygoogle.com/", "mygoogle.com"),
        (
            "https://googleblog.blogspot.com/",
            "googleblog.blogspot.com",
        ),
        ("https://docs.google.com/document/d/1", "docs.google.com"),
        ("https://market.yandex.ru/product/1", "market.yandex.ru"),
        ("https://notyandex.ru/", "notyandex.ru"),
        ("https://vk.company/", "vk.company"),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            csm(&a),
            (Channel::Referral, source, "referral"),
            "{referrer}"
        );
    }
}

#[test]
fn yandex_hosts() {
    for referrer in [
        "https://yandex.ru/",
        "https://yandex.kz/",
        "https://yandex.by/",
        "https://yandex.com/",
        "https://yandex.com.tr/",
        "https://ya.ru/",
        "https://m.ya.ru/",
        "https://yandex.ru/search/?text=x",
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            csm(&a),
            (Channel::OrganicSearch, "yandex", "organic"),
            "{referrer}"
        );
    }
    let a = visit("https://shop.ru/", "https://mail.yandex.ru/?uid=1");
    assert_eq!(csm(&a), (Channel::Email, "mail.yandex.ru", "email"));
    let a = visit("https://shop.ru/", "https://zen.yandex.ru/media/shop");
    assert_eq!(csm(&a), (Channel::Social, "dzen", "social"));
}

#[test]
fn other_search_engines() {
    for (referrer, source) in [
        ("https://www.bing.com/", "bing"),
        ("https://cn.bing.com/", "bing"),
        ("https://go.mail.ru/search?q=x", "mail.ru"),
        ("https://search.mail.ru/", "mail.ru"),
        ("https://duckduckgo.com/", "duckduckgo"),
        ("https://html.duckduckgo.com/html/", "duckduckgo"),
        ("https://search.yahoo.com/", "yahoo"),
        ("https://uk.search.yahoo.com/", "yahoo"),
        ("https://nova.rambler.ru/search?query=x", "rambler"),
        ("https://www.ecosia.org/", "ecosia"),
        ("https://www.baidu.com/", "baidu"),
        ("https://search.seznam.cz/", "seznam"),
        ("https://seznam.cz/", "seznam"),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            csm(&a),
            (Channel::OrganicSearch, source, "organic"),
            "{referrer}"
        );
    }
}

#[test]
fn search_keywords_from_the_referrer() {
    for (referrer, keyword) in [
        (
            "https://www.google.com/search?q=sofa+moscow&hl=ru",
            "sofa moscow",
        ),
        (
            "https://yandex.ru/search/?text=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD&lr=213",
            "диван",
        ),
        ("https://www.bing.com/search?q=sofa%20kz", "sofa kz"),
        ("https://duckduckgo.com/?q=sofa", "sofa"),
        ("https://go.mail.ru/search?q=%D0%B4", "д"),
        ("https://search.yahoo.com/search?p=sofa", "sofa"),
        ("https://nova.rambler.ru/search?query=sofa", "sofa"),
        ("https://www.baidu.com/s?wd=sofa", "sofa"),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(a.keyword.as_deref(), Some(keyword), "{referrer}");
    }
    // Most engines strip the query today.
    let a = visit("https://shop.ru/", "https://www.google.com/");
    assert_eq!(a.keyword, None);
    // The parameter of another engine is not a keyword.
    let a = visit("https://shop.ru/", "https://yandex.ru/search/?q=sofa");
    assert_eq!(a.keyword, None);
    // utm_term wins over the referrer's query.
    let a = visit(
        "https://shop.ru/?utm_term=divan",
        "https://www.google.com/search?q=sofa",
    );
    assert_eq!(a.keyword.as_deref(), Some("divan"));
    // Social referrers carry no keyword.
    let a = visit("https://shop.ru/", "https://vk.com/search?q=sofa");
    assert_eq!(a.keyword, None);
}

#[test]
fn social_networks() {
    for (referrer, source) in [
        ("https://vk.com/", "vk"),
        ("https://m.vk.com/wall-1_2", "vk"),
        ("https://away.vk.com/away.php?to=x", "vk"),
        ("https://vk.ru/", "vk"),
        ("https://ok.ru/group/1", "ok"),
        ("https://m.ok.ru/", "ok"),
        ("https://www.facebook.com/", "facebook"),
        ("https://m.facebook.com/", "facebook"),
        ("https://l.facebook.com/l.php?u=x", "facebook"),
        ("https://www.instagram.com/", "instagram"),
        ("https://l.instagram.com/?u=x", "instagram"),
        ("https://t.me/shopchannel/12", "telegram"),
        ("https://web.telegram.org/k/", "telegram"),
        ("https://twitter.com/", "twitter"),
        ("https://x.com/", "twitter"),
        ("https://t.co/abc", "twitter"),
        ("https://www.youtube.com/", "youtube"),
        ("https://m.youtube.com/", "youtube"),
        ("https://www.linkedin.com/", "linkedin"),
        ("https://lnkd.in/xyz", "linkedin"),
        ("https://www.tiktok.com/", "tiktok"),
        ("https://www.pinterest.com/", "pinterest"),
        ("https://ru.pinterest.com/", "pinterest"),
        ("https://dzen.ru/a/xyz", "dzen"),
        ("https://zen.yandex.ru/media/x", "dzen"),
        ("https://www.reddit.com/r/x", "reddit"),
        ("https://old.reddit.com/", "reddit"),
        ("https://wa.me/79001234567", "whatsapp"),
        ("https://web.whatsapp.com/", "whatsapp"),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(csm(&a), (Channel::Social, source, "social"), "{referrer}");
    }
}

#[test]
fn webmail() {
    for (referrer, source) in [
        ("https://mail.yandex.ru/", "mail.yandex.ru"),
        ("https://mail.yandex.com/", "mail.yandex.com"),
        ("https://mail.yandex.kz/", "mail.yandex.kz"),
        ("https://e.mail.ru/inbox/", "e.mail.ru"),
        ("https://mail.google.com/mail/u/0/", "mail.google.com"),
        ("https://outlook.live.com/mail/0/", "outlook.live.com"),
        ("https://outlook.office.com/mail/", "outlook.office.com"),
        ("https://mail.rambler.ru/", "mail.rambler.ru"),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(csm(&a), (Channel::Email, source, "email"), "{referrer}");
    }
}

#[test]
fn android_app_referrers() {
    for (referrer, channel, source) in [
        (
            "android-app://com.google.android.googlequicksearchbox/",
            Channel::OrganicSearch,
            "google",
        ),
        (
            "android-app://ru.yandex.searchplugin/",
            Channel::OrganicSearch,
            "yandex",
        ),
        (
            "android-app://org.telegram.messenger/",
            Channel::Social,
            "telegram",
        ),
        (
            "android-app://com.google.android.gm/",
            Channel::Email,
            "mail.google.com",
        ),
        (
            "android-app://com.example.someapp/",
            Channel::Referral,
            "com.example.someapp",
        ),
    ] {
        let a = visit("https://shop.ru/", referrer);
        assert_eq!(
            (a.channel, a.source.as_str()),
            (channel, source),
            "{referrer}"
        );
    }
}

#[test]
fn other_sites_are_referrals() {
    let a = visit(
        "https://shop.ru/sofas",
        "https://www.news.example.com/article/1?x=y",
    );
    assert_eq!(csm(&a), (Channel::Referral, "news.example.com", "referral"));
    assert_eq!(a.referrer_domain.as_deref(), Some("news.example.com"));
    assert_eq!(a.keyword, None);
    let a = visit("https://shop.ru/", "https://www.avito.ru/moskva/mebel");
    assert_eq!(csm(&a), (Channel::Referral, "avito.ru", "referral"));
}

#[test]
fn referrer_hosts_are_normalised() {
    // Uppercase, port, trailing dot, IDN (punycode, as browsers send it).
    let a = visit("https://shop.ru/", "HTTP://WWW.Partner.RU:8443/Path?Q=1");
    assert_eq!(csm(&a), (Channel::Referral, "partner.ru", "referral"));
    let a = visit("https://shop.ru/", "https://partner.ru./");
    assert_eq!(a.source, "partner.ru");
    let a = visit("https://shop.ru/", "https://пример.рф/страница");
    assert_eq!(
        csm(&a),
        (Channel::Referral, "xn--e1afmkfd.xn--p1ai", "referral")
    );
    let a = visit("https://shop.ru/", "https://xn--e1afmkfd.xn--p1ai/");
    assert_eq!(a.referrer_domain.as_deref(), Some("xn--e1afmkfd.xn--p1ai"));
    let a = visit("https://shop.ru/", "https://YANDEX.RU:443/search/?text=x");
    assert_eq!(csm(&a), (Channel::OrganicSearch, "yandex", "organic"));
    // "www." alone is a host, not an empty one.
    let a = visit("https://shop.ru/", "https://www./");
    assert_eq!(a.channel, Channel::Referral);
}

#[test]
fn idn_site_domains_match_unicode_referrers() {
    let site = domains(&["пример.рф"]);
    let a = classify(&Touch {
        url: "https://пример.рф/",
        referrer: Some("https://www.пример.рф/корзина"),
        site_domains: &site,
    });
    assert_eq!(a.channel, Channel::Direct);
    assert_eq!(a.referrer_domain.as_deref(), Some("xn--e1afmkfd.xn--p1ai"));
}

// ---- landing URL -------------------------------------------------------------------------

#[test]
fn landing_url_and_path() {
    let a = visit("  https://shop.ru/catalog/sofas/?color=red#reviews  ", "");
    assert_eq!(
        a.landing_url,
        "https://shop.ru/catalog/sofas/?color=red#reviews"
    );
    assert_eq!(a.landing_path, "/catalog/sofas/");
    for (url, path) in [
        ("https://shop.ru", "/"),
        ("https://shop.ru?utm_source=vk", "/"),
        ("HTTPS://SHOP.RU:8443/Cart", "/Cart"),
        ("/relative/page?utm_source=vk", "/relative/page"),
        ("shop.ru/no-scheme?x=1", "/no-scheme"),
        ("//shop.ru/proto-relative", "/proto-relative"),
        ("https://shop.ru/диван", "/%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD"),
        ("garbage", "/"),
        ("", "/"),
        ("?utm_source=vk", "/"),
    ] {
        assert_eq!(visit(url, "").landing_path, path, "{url}");
    }
}

#[test]
fn relative_landing_urls_still_carry_tags() {
    let a = visit("/sofas?utm_source=vk&utm_medium=cpc&utm_campaign=c1", "");
    assert_eq!(csm(&a), (Channel::Social, "vk", "cpc"));
    assert_eq!(a.campaign.as_deref(), Some("c1"));
    assert_eq!(
        a.landing_url,
        "/sofas?utm_source=vk&utm_medium=cpc&utm_campaign=c1"
    );
}

#[test]
fn tags_in_the_fragment_are_not_read() {
    let a = visit("https://shop.ru/#/page?utm_source=vk", "");
    assert_eq!(a.channel, Channel::Direct);
    let a = visit("https://shop.ru/?utm_source=vk#utm_source=ok", "");
    assert_eq!(a.source, "vk");
}

#[test]
fn landing_url_is_capped() {
    let long = format!("https://shop.ru/p?utm_source=vk&pad={}", "é".repeat(5000));
    let a = visit(&long, "");
    assert_eq!(a.landing_url.chars().count(), MAX_URL_CHARS);
    assert!(long.starts_with(&a.landing_url));
    assert_eq!(a.source, "vk");
    let long_path = format!("https://shop.ru/{}", "a".repeat(5000));
    assert_eq!(visit(&long_path, "").landing_path.len(), MAX_URL_CHARS);
}

// ---- rule 5: garbage ---------------------------------------------------------------------

#[test]
fn garbage_never_panics() {
    let huge = "x".repeat(1_000_000);
    let inputs = [
        "",
        "?",
        "&&&==&",
        "?utm_source",
        "?=vk",
        "https://",
        "http://[::1",
        "https://shop.ru/?utm_source=%ZZ%",
        "https://shop.ru/?utm_source=%FF%FEvk",
        "https://shop.ru/?utm_source=%D0",
        "\u{0}\u{7f}\u{feff}",
        "💥💥💥?utm_source=💥",
        "https://shop.ru:99999/",
        "mailto:a@b.c",
        huge.as_str(),
    ];
    for url in inputs {
        for referrer in inputs {
            let a = visit(url, referrer);
            assert!(a.landing_url.chars().count() <= MAX_URL_CHARS);
            assert!(a.source.chars().count() <= MAX_SOURCE_CHARS);
            assert!(a.landing_path.starts_with('/'));
        }
    }
}

#[test]
fn bad_percent_encoding_is_decoded_lossily() {
    let a = visit("https://shop.ru/?utm_source=%FF%FEvk&utm_campaign=%ZZ%", "");
    assert_eq!(a.source, "\u{fffd}\u{fffd}vk");
    assert_eq!(a.campaign.as_deref(), Some("%ZZ%"));
    assert_eq!(a.channel, Channel::Referral);
}

#[test]
fn huge_referrer_is_cut_not_trusted() {
    let referrer = format!("https://{}.example.com/", "a".repeat(100_000));
    let a = visit("https://shop.ru/", &referrer);
    // Cut to the work limit it has no valid host left: it is ignored.
    assert_eq!(csm(&a), (Channel::Direct, "(direct)", "(none)"));
    let referrer = format!("https://partner.ru/{}", "p".repeat(100_000));
    let a = visit("https://shop.ru/", &referrer);
    assert_eq!(csm(&a), (Channel::Referral, "partner.ru", "referral"));
}

// ---- query_param -------------------------------------------------------------------------

#[test]
fn query_param_decodes_and_skips_empty() {
    let url = "https://shop.ru/p?a=1&b=&c=%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%D0%BC%D0%B8%D1%80&d=%20x%20#frag=2";
    assert_eq!(query_param(url, "a").as_deref(), Some("1"));
    assert_eq!(query_param(url, "b"), None);
    assert_eq!(query_param(url, "c").as_deref(), Some("привет мир"));
    assert_eq!(query_param(url, "d").as_deref(), Some("x"));
    assert_eq!(query_param(url, "frag"), None);
    assert_eq!(query_param(url, "missing"), None);
    assert_eq!(query_param("https://shop.ru/", "a"), None);
    assert_eq!(query_param("/p?x=1&x=2", "x").as_deref(), Some("1"));
    assert_eq!(query_param("/p?x=&x=2", "x").as_deref(), Some("2"));
    assert_eq!(query_param("/p?X=up&x=low", "x").as_deref(), Some("low"));
    assert_eq!(query_param("/p?X=up", "x").as_deref(), Some("up"));
    assert_eq!(query_param("/p?flag", "flag"), None);
    assert_eq!(query_param("/p?a=b=c", "a").as_deref(), Some("b=c"));
}

// ---- serialisation -----------------------------------------------------------------------

#[test]
fn attribution_serializes_with_channel_names() {
    let a = visit("https://shop.ru/?gclid=G", "");
    let json = serde_json::to_value(&a).unwrap_or_default();
    assert_eq!(json["channel"], "paid_search");
    assert_eq!(json["source"], "google");
    assert_eq!(json["gclid"], "G");
    assert_eq!(json["yclid"], serde_json::Value::Null);
    assert_eq!(json["landing_path"], "/");
}

#[test]
fn truncation_counts_characters_not_bytes() {
    assert_eq!(truncate("abcd", 3), "abc");
    assert_eq!(truncate("abc", 3), "abc");
    assert_eq!(truncate("", 3), "");
    // Cyrillic letters are two bytes each: ten characters, nineteen bytes.
    assert_eq!(truncate("Привет мир", 6), "Привет");
    assert_eq!(truncate("Привет мир", 10), "Привет мир");
    assert_eq!(truncate("ёж", 1), "ё");
    assert_eq!(truncate("ёж", 3), "ёж");
}

// ---- the fast paths agree with the url and form_urlencoded crates -------------------------

mod fast_paths {
    use super::*;
    use proptest::prelude::*;

    /// URL-looking text: schemes, hosts and paths with the characters where the `url` crate
    /// rewrites or refuses (case, `%`, dots, `@`, `\`, brackets, ports, spaces, non-ASCII).
    fn urlish() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            4 => prop::sample::select(vec!["http://", "https://"]),
            1 => prop::sample::select(vec![
                "HTTPS://", "ftp://", "android-app://", "http:/", "//", "",
            ]),
        ];
        // Mostly hosts and paths a browser sends, now and then with what the crate rewrites.
        let host = prop_oneof![
            3 => "([a-z0-9]{1,6}[.-]){0,3}[a-z][a-z0-9]{0,5}\\.?(:[0-9]{1,6})?",
            1 => "[a-zA-Z0-9.\\-_%@:\\[\\]xn]{0,24}",
        ];
        let path = prop_oneof![
            3 => "(/[a-z0-9.%\\-_~!$&()*+,;=:@]{0,12}){0,3}",
            1 => "(/[a-zA-Z0-9.%/\\-_~!$&'()*+,;=:@ \\\\^`{}|\"<>\u{e9}\u{434}]{0,16}){0,3}",
        ];
        let query = prop_oneof![
            3 => "(\\?[a-zA-Z0-9%+=&;._\\-]{0,24})?",
            1 => "(\\?[a-zA-Z0-9%+=&;. _\\-\u{434}]{0,24})?",
        ];
        let frag = "(#[a-z?=&]{0,8})?";
        (scheme, host, path, query, frag).prop_map(|(s, h, p, q, f)| format!("{s}{h}{p}{q}{f}"))
    }

    /// Decoded pairs, owned, to compare.
    fn owned<'a>(
        pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
    ) -> Vec<(String, String)> {
        pairs
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever `PlainUrl` splits, the `url` crate parses to the same host, path and
        /// (decoded) query.
        #[test]
        fn plain_urls_split_as_the_url_crate_parses(raw in urlish()) {
            if let Some(p) = PlainUrl::split(&raw) {
                let u = Url::parse(&raw);
                prop_assert!(u.is_ok(), "{raw:?} split, but the url crate refuses it");
                let u = u.unwrap_or_else(|_| unreachable!());
                prop_assert_eq!(u.host_str(), Some(p.host), "host of {:?}", raw);
                let path = if p.path.is_empty() { "/" } else { p.path };
                prop_assert_eq!(u.path(), path, "path of {:?}", raw);
                let ours = p.query.map(|q| owned(form_pairs(q)));
                let theirs = u.query().map(|_| owned(u.query_pairs()));
                prop_assert_eq!(ours, theirs, "query of {:?}", raw);
            }
        }

        /// `form_pairs` decodes as `form_urlencoded::parse` does.
        #[test]
        fn form_pairs_decode_as_form_urlencoded(q in "[a-zA-Z0-9%+=&;. _\\-\u{434}]{0,40}") {
            prop_assert_eq!(owned(form_pairs(&q)), owned(url::form_urlencoded::parse(q.as_bytes())));
        }
    }

    /// The property above is only as good as the share of its cases that take the fast
    /// path.
    #[test]
    fn the_url_strategy_reaches_the_fast_path() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = urlish();
        let plain = (0..2000)
            .filter_map(|_| strategy.new_tree(&mut runner).ok())
            .filter(|t| PlainUrl::split(&t.current()).is_some())
            .count();
        assert!(
            plain > 500,
            "only {plain} of 2000 generated URLs were plain"
        );
    }

    #[test]
    fn plain_urls_are_the_usual_ones() {
        // What browsers send nearly always takes the fast path...
        for url in [
            "https://bench.example/sofas?utm_source=google&utm_medium=cpc",
            "https://www.google.com/",
            "http://shop.ru:8080/catalog/sofas/red-1?x=%D0%B4#top",
            "https://yandex.ru/search/?text=sofa+red&lr=213",
        ] {
            assert!(PlainUrl::split(url).is_some(), "{url}");
        }
        // ... and what the url crate would rewrite does not.
        for url in [
            "HTTPS://Shop.ru/",
            "https://shop.ru/a/../b",
            "https://shop.ru/a/%2e%2E/b",
            "https://user@shop.ru/",
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://xn--80ak6aa92e.com/",
            "https://shop.ru/диван",
            "https://shop.ru/a b",
            "https://shop.ru:99999/",
            "https://[::1]/",
            "https://shop.ru\\path",
            "android-app://com.google.android.gm/",
        ] {
            assert!(PlainUrl::split(url).is_none(), "{url}");
        }
    }

    #[test]
    fn sources_without_a_dot_are_no_hosts() {
        assert_eq!(source_host_kind("google"), None);
        assert_eq!(source_host_kind("vk.com"), Some(Channel::Social));
        assert_eq!(
            source_host_kind("www.Yandex.ru"),
            Some(Channel::OrganicSearch)
        );
        assert!(is_social_source("t.me"));
        assert!(is_search_source("bing.com"));
        assert!(!is_search_source("news.example"));
    }
}
