//! Phone numbers in E.164, parsed from any common written form.
//!
//! The parsing itself is libphonenumber's (the `phonenumber` crate); this module keeps
//! it behind our own type so that a `Phone` can only hold a valid E.164 number.

use std::fmt;
use std::str::FromStr;

use phonenumber::country;

use crate::validate::Invalid;

/// An ISO 3166-1 alpha-2 region code that libphonenumber knows ("RU", "KZ", "US").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(country::Id);

impl Region {
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        let up = code.trim().to_ascii_uppercase();
        if up.len() != 2 {
            return Err(Invalid::field(
                "",
                format!("`{code}` is not a two-letter region code (ISO 3166-1, e.g. RU, KZ, US)"),
            ));
        }
        country::Id::from_str(&up)
            .map(Self)
            .map_err(|_| Invalid::field("", format!("`{code}` is not a known region code")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Region::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A valid phone number, held in E.164 form (`+74951234567`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone {
    e164: String,
    /// How many digits after `+` are the country calling code.
    cc_len: u8,
}

impl Phone {
    /// Parse a number as people write it. Numbers without a `+` are read in `region`.
    ///
    /// ```
    /// use calltrail_core::{Phone, Region};
    /// let ru = Region::parse("RU").unwrap();
    /// assert_eq!(Phone::parse("8 (495) 123-45-67", Some(ru)).unwrap().as_str(), "+74951234567");
    /// ```
    pub fn parse(input: &str, region: Option<Region>) -> Result<Self, Invalid> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(Invalid::field("", "phone number must not be empty"));
        }
        if trimmed.len() > 40 {
            return Err(Invalid::field("", "phone number is too long"));
        }
        if !trimmed.chars().any(|c| c.is_ascii_digit()) {
            return Err(Invalid::field(
                "",
                format!("`{trimmed}` is not a phone number"),
            ));
        }
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 6 || digits.len() > 17 {
            return Err(Invalid::field(
                "",
                format!("`{trimmed}` is not a valid phone number (wrong length)"),
            ));
        }
        let found = if trimmed.starts_with('+') {
            international(&digits)
        } else if let Some(region) = region {
            national(&digits, region)
        } else {
            return Err(Invalid::field(
                "",
                format!("`{trimmed}` has no country code (write it as +<country code>...)"),
            ));
        };
        let Some((cc, nsn)) = found else {
            return Err(Invalid::field(
                "",
                format!("`{trimmed}` is not a valid phone number"),
            ));
        };
        let e164 = format!("+{cc}{nsn}");
        let cc_len = cc.len() as u8;
        Ok(Self { e164, cc_len })
    }

    /// Parse a number that must already be in E.164 form.
    pub fn parse_e164(input: &str) -> Result<Self, Invalid> {
        let t = input.trim();
        if !t.starts_with('+') || !t[1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid::field(
                "",
                format!("`{t}` is not an E.164 number (expected +<country code><number>)"),
            ));
        }
        Self::parse(t, None)
    }

    /// `+74951234567`
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The country calling code digits (`7`).
    pub fn country_code(&self) -> &str {
        &self.e164[1..=usize::from(self.cc_len)]
    }

    /// The national significant number digits (`4951234567`).
    pub fn national(&self) -> &str {
        &self.e164[1 + usize::from(self.cc_len)..]
    }

    /// International format with the region's grouping (`+7 495 123-45-67`).
    pub fn international(&self) -> String {
        phonenumber::parse(None, &self.e164)
            .ok()
            .filter(|p| p.format().mode(phonenumber::Mode::E164).to_string() == self.e164)
            .map_or_else(
                || self.e164.clone(),
                |p| {
                    p.format()
                        .mode(phonenumber::Mode::International)
                        .to_string()
                },
            )
    }
}

/// How a number given in E.164 is printed for visitors: its international format, or the
/// text as given when it is not a valid E.164 number.
pub fn display(e164: &str) -> String {
    Phone::parse_e164(e164).map_or_else(|_| e164.to_owned(), |p| p.international())
}

/// Whether `nsn` is a valid national significant number under one of `metas`, by
/// libphonenumber's metadata: it fits the general pattern and one number type.
fn valid_nsn(metas: &[&phonenumber::Metadata], nsn: &str) -> bool {
    use phonenumber::Type;
    const TYPES: [Type; 10] = [
        Type::FixedLine,
        Type::Mobile,
        Type::TollFree,
        Type::PremiumRate,
        Type::SharedCost,
        Type::PersonalNumber,
        Type::Voip,
        Type::Pager,
        Type::Uan,
        Type::Voicemail,
    ];
    metas.iter().any(|m| {
        let d = m.descriptors();
        d.general().is_match(nsn)
            && TYPES
                .iter()
                .any(|t| d.get(*t).is_some_and(|x| x.is_match(nsn)))
    })
}

/// Digits written after a `+`: find the country code, then check the rest.
///
/// We read digits ourselves rather than through `phonenumber::parse`, which strips a trunk
/// prefix from national numbers that start with it ("+7 800 ..." in Russia,
/// whisperfish/rust-phonenumber#76); the metadata (patterns, lengths) is still libphonenumber's.
fn international(digits: &str) -> Option<(String, String)> {
    (1..=3).find_map(|n| {
        let cc = digits.get(..n)?;
        let code: u16 = cc.parse().ok()?;
        let metas = phonenumber::metadata::DATABASE.by_code(&code)?;
        let nsn = &digits[n..];
        valid_nsn(&metas, nsn).then(|| (cc.to_owned(), nsn.to_owned()))
    })
}

/// Digits written without a `+`, read in `region`: with a trunk prefix ("8 495 ..."), with
/// the country code but no plus ("7 495 ..."), or as the bare national number.
fn national(digits: &str, region: Region) -> Option<(String, String)> {
    let meta = phonenumber::metadata::DATABASE.by_id(region.as_str())?;
    let cc = meta.country_code().to_string();
    let metas = phonenumber::metadata::DATABASE
        .by_code(&meta.country_code())
        .unwrap_or_else(|| vec![meta]);
    let mut candidates: Vec<&str> = Vec::with_capacity(3);
    if let Some(prefix) = meta.national_prefix() {
        candidates.extend(digits.strip_prefix(prefix));
    }
    candidates.extend(digits.strip_prefix(cc.as_str()));
    candidates.push(digits);
    candidates
        .into_iter()
        .find(|nsn| valid_nsn(&metas, nsn))
        .map(|nsn| (cc.clone(), nsn.to_owned()))
        .or_else(|| digits.strip_prefix("00").and_then(international))
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.e164)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

impl serde::Serialize for Phone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)]
    fn ru() -> Option<Region> {
        Some(Region::parse("RU").unwrap())
    }

    #[test]
    fn display_formats_valid_numbers_and_keeps_anything_else_as_given() {
        assert_eq!(display("+74951234567"), "+7 495 123-45-67");
        assert_eq!(display("+79161234567"), "+7 916 123-45-67");
        // The phonenumber crate reads +7 800 as +7 00 (it strips the 8 as a trunk prefix);
        // `international` sees the round trip fail and keeps the E.164 form rather than
        // print a wrong number.
        assert_eq!(display("+78005553535"), "+78005553535");
        // Text that is not E.164 (a row written by hand, say) is shown as it is.
        for s in ["", "8 495 123-45-67", "+7495", "not a number"] {
            assert_eq!(display(s), s);
        }
    }

    #[test]
    fn parses_russian_written_forms() {
        for s in [
            "+7 (495) 123-45-67",
            "8 495 123 45 67",
            "+74951234567",
            "8(495)1234567",
            "7 495 123-45-67",
            "8\u{a0}495\u{a0}123\u{2011}45\u{2011}67",
        ] {
            let p = Phone::parse(s, ru()).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.as_str(), "+74951234567", "{s}");
            assert_eq!(p.country_code(), "7");
            assert_eq!(p.national(), "4951234567");
        }
        for s in [
            "8-800-555-35-35",
            "+7 800 555-35-35",
            "88005553535",
            "7 800 555 35 35",
        ] {
            assert_eq!(
                Phone::parse(s, ru()).unwrap().as_str(),
                "+78005553535",
                "{s}"
            );
        }
    }

    #[test]
    fn parses_other_countries() {
        let us = Phone::parse("+1 415-555-0100", ru()).unwrap();
        assert_eq!(us.as_str(), "+14155550100");
        assert_eq!(us.country_code(), "1");
        let kz = Phone::parse("8 727 244 55 66", Some(Region::parse("kz").unwrap())).unwrap();
        assert_eq!(kz.as_str(), "+77272445566");
        let gb = Phone::parse("+44 20 7946 0018", None).unwrap();
        assert_eq!(gb.country_code(), "44");
        assert_eq!(gb.national(), "2079460018");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "   ",
            "hello",
            "123",
            "+7 495",
            "8 495 123 45 67 89 00 11 22",
            "++--",
        ] {
            assert!(Phone::parse(s, ru()).is_err(), "{s:?} accepted");
        }
        assert!(Phone::parse("8 495 123 45 67", None).is_err());
        assert!(Phone::parse_e164("84951234567").is_err());
        assert!(Phone::parse_e164("+7 495 123 45 67").is_err());
        assert!(Phone::parse_e164("+74951234567").is_ok());
        assert!(Phone::parse("+7 800 555-35-3", ru()).is_err());
        assert!(Phone::parse("+999 1234567", ru()).is_err());
    }

    #[test]
    fn regions() {
        assert_eq!(Region::parse("ru").unwrap().as_str(), "RU");
        assert!(Region::parse("XX").is_err());
        assert!(Region::parse("RUS").is_err());
    }
}
