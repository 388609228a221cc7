//! A small MaxMind DB (`.mmdb`) writer for tests, after the MaxMind DB File Format
//! Specification v2.0: an IPv4 binary search tree with 24-bit records, the 16-byte
//! data section separator, a data section of maps, arrays, strings, booleans and
//! unsigned integers, and the metadata map after `\xAB\xCD\xEFMaxMind.com`.
//!
//! Real city databases cannot be downloaded here (licence, size), so tests build
//! their own, laid out like GeoIP2/GeoLite2-City or DB-IP City Lite.
#![allow(dead_code)]
#![allow(clippy::missing_panics_doc)]

use std::net::Ipv4Addr;

/// A value in the data section.
#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
}

pub fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

pub fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// `{"en": .., "ru": ..}`-style names, skipping absent languages.
pub fn names(langs: &[(&str, &str)]) -> Value {
    Value::Map(langs.iter().map(|(l, n)| ((*l).to_owned(), s(n))).collect())
}

/// A GeoIP2/GeoLite2-City-like record.
pub fn geoip2_city(geoname_id: u32, city_names: &[(&str, &str)], country: &str) -> Value {
    map(&[
        (
            "city",
            map(&[
                ("geoname_id", Value::U32(geoname_id)),
                ("names", names(city_names)),
            ]),
        ),
        (
            "country",
            map(&[
                ("geoname_id", Value::U32(2_017_370)),
                ("iso_code", s(country)),
                ("names", names(&[("en", "Russia"), ("ru", "Россия")])),
            ]),
        ),
        (
            "location",
            map(&[
                ("time_zone", s("Europe/Moscow")),
                ("accuracy_radius", Value::U16(20)),
            ]),
        ),
    ])
}

#[derive(Debug, Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds an IPv4 database in memory.
pub struct Writer {
    nodes: Vec<[Rec; 2]>,
    data: Vec<u8>,
    database_type: String,
    languages: Vec<String>,
}

impl Writer {
    pub fn new(database_type: &str, languages: &[&str]) -> Self {
        Self {
            nodes: vec![[Rec::Empty, Rec::Empty]],
            data: Vec::new(),
            database_type: database_type.to_owned(),
            languages: languages.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    /// Map `cidr` (e.g. `198.51.100.0/24`) to `value`. Networks must not overlap.
    pub fn insert(&mut self, cidr: &str, value: &Value) -> &mut Self {
        let (addr, len) = cidr.split_once('/').expect("a CIDR");
        let net = u32::from(addr.parse::<Ipv4Addr>().expect("an IPv4 network"));
        let len: u32 = len.parse().expect("a prefix length");
        assert!((1..=32).contains(&len), "prefix length {len}");
        let offset = self.data.len();
        encode(value, &mut self.data);
        let mut cur = 0;
        for i in 0..len {
            let bit = ((net >> (31 - i)) & 1) as usize;
            if i == len - 1 {
                assert!(
                    matches!(self.nodes[cur][bit], Rec::Empty),
                    "{cidr} overlaps"
                );
                self.nodes[cur][bit] = Rec::Data(offset);
            } else {
                cur = match self.nodes[cur][bit] {
                    Rec::Node(n) => n,
                    Rec::Empty => {
                        self.nodes.push([Rec::Empty, Rec::Empty]);
                        let n = self.nodes.len() - 1;
                        self.nodes[cur][bit] = Rec::Node(n);
                        n
                    }
                    Rec::Data(_) => panic!("{cidr} is inside a network already mapped"),
                };
            }
        }
        self
    }

    /// The whole file.
    pub fn finish(&self) -> Vec<u8> {
        let node_count = self.nodes.len();
        let record = |r: Rec| -> u32 {
            let v = match r {
                Rec::Empty => node_count,
                Rec::Node(n) => n,
                // Spec: data offset = (record - node_count) - 16.
                Rec::Data(off) => node_count + 16 + off,
            };
            assert!(v < 1 << 24, "too big for 24-bit records");
            v as u32
        };
        let mut out = Vec::new();
        for [l, r] in &self.nodes {
            out.extend_from_slice(&record(*l).to_be_bytes()[1..]);
            out.extend_from_slice(&record(*r).to_be_bytes()[1..]);
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let meta = map(&[
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(24)),
            ("ip_version", Value::U16(4)),
            ("database_type", s(&self.database_type)),
            (
                "languages",
                Value::Array(self.languages.iter().map(|l| s(l)).collect()),
            ),
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(1_700_000_000)),
            ("description", map(&[("en", s("calltrail test database"))])),
        ]);
        encode(&meta, &mut out);
        out
    }
}

/// Control byte(s): type (extended types > 7 take a second byte), then the size.
fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    let (low, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else {
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

fn uint(kind: u8, v: u64, width: usize, out: &mut Vec<u8>) {
    let bytes = &v.to_be_bytes()[8 - width..];
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(width);
    control(kind, width - first, out);
    out.extend_from_slice(&bytes[first..]);
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(t) => {
            control(2, t.len(), out);
            out.extend_from_slice(t.as_bytes());
        }
        Value::U16(n) => uint(5, u64::from(*n), 2, out),
        Value::U32(n) => uint(6, u64::from(*n), 4, out),
        Value::U64(n) => uint(9, *n, 8, out),
        // Extended type 14; the value is the size field, no payload.
        Value::Bool(b) => control(14, usize::from(*b), out),
        Value::Map(pairs) => {
            control(7, pairs.len(), out);
            for (k, x) in pairs {
                encode(&Value::Str(k.clone()), out);
                encode(x, out);
            }
        }
        Value::Array(items) => {
            control(11, items.len(), out);
            for x in items {
                encode(x, out);
            }
        }
    }
}
