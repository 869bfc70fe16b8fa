//! The fast path of [`crate::decode_record`]: a record in the exact form [`crate::encode_record`] writes, read in one pass.
//!
//! Nearly every record on the stream was written by our producer, so nearly every record has one
//! form: compact JSON, the fields in declaration order, strings without escapes. This reader
//! accepts that form only. It borrows every string from the record, and checks the `properties`
//! rules while it finds the object's end, so the object is scanned once instead of being skipped
//! by serde_json and then parsed again to check it.
//!
//! It applies every rule of [`EnrichedEvent::check`] on the way, but never decides that a record
//! is bad. Whatever it does not recognise — another field order, whitespace, an escape, a number
//! whose compact form differs from its text, a broken rule — makes it answer `None`, and the
//! general serde path reads the record and names precisely what is wrong. A property test below
//! holds it to that path on random records and on one-byte edits of them.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::event::EnrichedEvent;
use crate::properties::Properties;
use crate::rules::{
    self, ANONYMOUS_ID, KeySet, REFERRER, SESSION_ID, TextRule, URL, USER_AGENT, USER_ID, is_control_byte,
    parse_utc_fast,
};

/// `client_ip` is written by the producer, not sent by clients: no client rule holds it, only
/// the reader's own demand that it be a plain string.
const CLIENT_IP: TextRule = TextRule { field: "client_ip", min: 0, max: usize::MAX };
/// `site` too is the producer's (a configured site id); records written before sites have none.
const SITE: TextRule = TextRule { field: "site", min: 0, max: usize::MAX };
/// `country` is the producer's lookup of the full address (ISO 3166-1 alpha-2); records written
/// before it, or with the lookup off, have none.
const COUNTRY: TextRule = TextRule { field: "country", min: 0, max: usize::MAX };

/// Reads `text` if it is a canonical version-1 record that passes every rule
/// ([`EnrichedEvent::check`]); `None` for anything else.
pub(crate) fn read(text: &str) -> Option<EnrichedEvent<'_>> {
    if has_special_byte(text.as_bytes()) {
        return None;
    }
    let mut r = Reader { text, pos: 0 };
    r.expect(r#"{"v":1,"event":{"event_id":"#)?;
    let event_id = rules::event_id(r.uuid()?).ok()?;
    r.expect(r#","event_type":"#)?;
    let event_type = r.string(Scan::Short)?;
    rules::event_type(event_type).ok()?;
    r.expect(r#","occurred_at":"#)?;
    let occurred_at = r.timestamp()?;
    r.expect(r#","received_at":"#)?;
    let received_at = r.timestamp()?;
    // The optional fields in the order `EnrichedEvent` declares (and serde writes) them. A
    // struct's fields are evaluated in the order written, which is the order of the record.
    let event = EnrichedEvent {
        event_id,
        event_type: Cow::Borrowed(event_type),
        occurred_at,
        received_at,
        anonymous_id: r.text(r#","anonymous_id":"#, Scan::Short, ANONYMOUS_ID)?,
        user_id: r.text(r#","user_id":"#, Scan::Short, USER_ID)?,
        session_id: r.text(r#","session_id":"#, Scan::Short, SESSION_ID)?,
        url: r.text(r#","url":"#, Scan::Long, URL)?,
        referrer: r.text(r#","referrer":"#, Scan::Long, REFERRER)?,
        user_agent: r.text(r#","user_agent":"#, Scan::Long, USER_AGENT)?,
        client_ip: r.text(r#","client_ip":"#, Scan::Short, CLIENT_IP)?,
        site: r.text(r#","site":"#, Scan::Short, SITE)?,
        country: r.text(r#","country":"#, Scan::Short, COUNTRY)?,
        original_occurred_at: r.optional_timestamp(r#","original_occurred_at":"#)?,
        sent_at: r.optional_timestamp(r#","sent_at":"#)?,
        // Violations are JSON inside a string, so escaped: such a record has a backslash and
        // never gets here (see `has_special_byte`); the general path reads it.
        plan_violations: None,
        properties: r.properties()?,
    };
    r.expect("}}")?;
    (r.pos == text.len()).then_some(event)
}

/// How to find a string's closing quote: identifiers and keys end within a few bytes, where a
/// word-at-a-time scan beats memchr's set-up; URLs and agents run to a hundred bytes and more.
#[derive(Clone, Copy)]
enum Scan {
    Short,
    Long,
    /// Either: a word-at-a-time scan of the first bytes, then memchr.
    Unknown,
}

/// One scan, up front, for the bytes that would each need care further on: a canonical record
/// has no whitespace between tokens and JSON allows no raw control character in a string (bytes
/// below 0x20), the producer's records need no escapes (`\`), and the text rules forbid DEL
/// (0x7F). Without them, a string ends at the next quote and only its length is left to check.
/// Branch-free per chunk, so the compiler vectorises it.
fn has_special_byte(bytes: &[u8]) -> bool {
    bytes.chunks(64).any(|chunk| chunk.iter().fold(false, |any, &b| any | is_control_byte(b) | (b == b'\\')))
}

/// The first quote in `bytes`, eight bytes at a time (SWAR): in each word, the bytes equal to
/// `"` become zero, and a carry-free zero-byte test marks exactly those. For the few to few dozen
/// bytes of identifiers and keys this is several times faster than a byte loop, and has none of
/// memchr's set-up per call.
fn find_quote(bytes: &[u8]) -> Option<usize> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = 0x2222_2222_2222_2222;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ QUOTES;
        let zero = !(((x & !HIGH) + !HIGH) | x) & HIGH;
        if zero != 0 {
            return Some(at + zero.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    words.remainder().iter().position(|&b| b == b'"').map(|i| at + i)
}

struct Reader<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Reader<'t> {
    fn rest(&self) -> &'t [u8] {
        &self.text.as_bytes()[self.pos..]
    }

    fn peek(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    /// Consumes `token` if the input continues with it. Inlined, so that each comparison with a
    /// constant key compiles to a few word compares instead of a call to `memcmp`.
    #[inline(always)]
    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token.as_bytes());
        if found {
            self.pos += token.len();
        }
        found
    }

    fn eat_byte(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    #[inline(always)]
    fn expect(&mut self, token: &str) -> Option<()> {
        self.eat(token).then_some(())
    }

    /// A string, borrowed; the input must be at its opening quote. There are no escapes (see
    /// [`has_special_byte`]), so it ends at the next quote.
    fn string(&mut self, scan: Scan) -> Option<&'t str> {
        if !self.eat_byte(b'"') {
            return None;
        }
        let rest = self.rest();
        let len = match scan {
            Scan::Short => find_quote(rest)?,
            Scan::Long => memchr::memchr(b'"', rest)?,
            Scan::Unknown => {
                const SHORT: usize = 32;
                match find_quote(&rest[..rest.len().min(SHORT)]) {
                    Some(len) => len,
                    None => SHORT + memchr::memchr(b'"', rest.get(SHORT..)?)?,
                }
            }
        };
        let s = &self.text[self.pos..self.pos + len];
        self.pos += len + 1;
        Some(s)
    }

    /// The event ID: hyphenated, so 36 characters (any other spelling goes to the general path).
    fn uuid(&mut self) -> Option<&'t str> {
        const LEN: usize = uuid::fmt::Hyphenated::LENGTH;
        let rest = self.rest();
        if rest.first() != Some(&b'"') || rest.get(LEN + 1) != Some(&b'"') {
            return None;
        }
        let s = self.text.get(self.pos + 1..self.pos + 1 + LEN)?;
        self.pos += LEN + 2;
        Some(s)
    }

    /// A timestamp as chrono writes it: `YYYY-MM-DDTHH:MM:SS` with 0, 3, 6 or 9 fraction digits
    /// and `Z`, so the closing quote is at one of four places. They are tried shortest first: a
    /// place before the real end is inside the timestamp, which holds no quote.
    fn timestamp(&mut self) -> Option<DateTime<Utc>> {
        let rest = self.rest();
        if rest.first() != Some(&b'"') {
            return None;
        }
        let len = [20, 24, 27, 30].into_iter().find(|&len| rest.get(len + 1) == Some(&b'"'))?;
        let at = parse_utc_fast(&rest[1..=len])?;
        self.pos += len + 2;
        Some(at)
    }

    /// An optional timestamp: absent (records written before it, or nothing to say), or `key`
    /// and a timestamp.
    #[inline(always)]
    fn optional_timestamp(&mut self, key: &str) -> Option<Option<DateTime<Utc>>> {
        if !self.eat(key) {
            return Some(None);
        }
        self.timestamp().map(Some)
    }

    /// An optional text field: absent, or `key` and a string within the field's length rule.
    #[inline(always)]
    fn text(&mut self, key: &str, scan: Scan, rule: TextRule) -> Option<Option<Cow<'t, str>>> {
        if !self.eat(key) {
            return Some(None);
        }
        let s = self.string(scan)?;
        rule.length(s).ok()?;
        Some(Some(Cow::Borrowed(s)))
    }

    /// `properties`, if present: an object whose text is borrowed once every rule has held.
    fn properties(&mut self) -> Option<Properties<'t>> {
        if !self.eat(r#","properties":"#) {
            return Some(Properties::empty());
        }
        let start = self.pos;
        if self.peek()? != b'{' {
            return None;
        }
        self.value(0)?;
        let json = &self.text[start..self.pos];
        // Every number was checked to be in its compact form and no string has an escape, so the
        // text is exactly as long as the compact JSON the size rule counts.
        rules::properties_size(json.len()).ok()?;
        Some(Properties::checked(json))
    }

    /// A value inside `properties`, checked against the rules; `depth` is the depth of the
    /// container holding it (0 for the `properties` object itself, whose own depth is 1), as in
    /// `properties::check_properties`.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' if rules::nesting(depth).is_ok() => self.object(depth + 1),
            b'[' if rules::nesting(depth).is_ok() => self.array(depth + 1),
            b'"' => rules::property_string(self.string(Scan::Unknown)?).ok(),
            b't' => self.expect("true"),
            b'f' => self.expect("false"),
            b'n' => self.expect("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if !self.eat_byte(b'{') {
            return None;
        }
        if self.eat_byte(b'}') {
            return Some(());
        }
        let mut keys = 0;
        // A key sent twice is for the general path to name. Keys here have no escapes, so
        // comparing their text is comparing the keys.
        let mut seen = KeySet::default();
        loop {
            keys += 1;
            rules::key_count(keys).ok()?;
            let key = self.string(Scan::Short)?;
            rules::property_key(key).ok()?;
            if seen.contains(key) {
                return None;
            }
            seen.insert(Cow::Borrowed(key));
            if !self.eat_byte(b':') {
                return None;
            }
            self.value(depth)?;
            if self.eat_byte(b'}') {
                return Some(());
            }
            if !self.eat_byte(b',') {
                return None;
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if !self.eat_byte(b'[') {
            return None;
        }
        if self.eat_byte(b']') {
            return Some(());
        }
        let mut items = 0;
        loop {
            items += 1;
            rules::item_count(items).ok()?;
            self.value(depth)?;
            if self.eat_byte(b']') {
                return Some(());
            }
            if !self.eat_byte(b',') {
                return None;
            }
        }
    }

    /// A number in the form the producer writes it, so that the record's text is the compact
    /// text the size rule counts: an integer of up to 18 digits (serde_json reads it as an
    /// integer and writes the same digits back), or a decimal without exponent that serde_json
    /// reads as a finite double and writes back unchanged. Anything else (an exponent, a longer
    /// integer, `-0`, `1.50`) goes to the general path.
    fn number(&mut self) -> Option<()> {
        let rest = self.rest();
        let sign = usize::from(rest.first() == Some(&b'-'));
        let int = rest[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = &rest[sign..sign + int];
        if int == 0 || (int > 1 && digits[0] == b'0') {
            return None;
        }
        let mut len = sign + int;
        if rest.get(len) == Some(&b'.') {
            let fraction = rest[len + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if fraction == 0 {
                return None;
            }
            len += 1 + fraction;
        }
        if matches!(rest.get(len), Some(b'e' | b'E')) {
            return None;
        }
        let token = &self.text[self.pos..self.pos + len];
        let canonical = if len == sign + int {
            int <= 18 && token != "-0"
        } else {
            let fraction = &rest[sign + int + 1..len];
            is_short_decimal(digits, fraction) || writes_back_unchanged(token)
        };
        self.pos += len;
        canonical.then_some(())
    }
}

/// A decimal that serde_json certainly writes back digit for digit, decided without parsing it:
/// at most 15 significant digits (so it names one double, which serde_json's parser reaches
/// exactly, and no other decimal of as few digits names the same double, so the shortest form
/// printed is these digits), no trailing zero, and a magnitude from 0.1 to below 10^7, well
/// inside the range serde_json prints without an exponent. Prices and rates are such numbers;
/// anything else is asked of serde_json itself ([`writes_back_unchanged`]). A test holds the two
/// to the same answer.
fn is_short_decimal(int: &[u8], fraction: &[u8]) -> bool {
    let significant = match int {
        [b'0'] => (fraction.first() != Some(&b'0')).then_some(fraction.len()),
        [b'1'..=b'9', ..] if int.len() <= 7 => Some(int.len() + fraction.len()),
        _ => None,
    };
    significant.is_some_and(|n| n <= 15) && fraction.last().is_some_and(|&d| d != b'0')
}

/// Whether serde_json reads `token` as a finite double and writes it back as the same text (what
/// the producer's properties walker does with every decimal).
fn writes_back_unchanged(token: &str) -> bool {
    let Ok(value) = serde_json::from_str::<f64>(token) else { return false };
    let mut buf = [0u8; 32];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    if serde_json::to_writer(&mut out, &value).is_err() {
        return false;
    }
    let written = out.position() as usize;
    &buf[..written] == token.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ServerFacts, validate_event};
    use serde_json::json;

    /// A record as the producer writes it, with `properties` in their compact form whether or not
    /// the producer would have accepted them (a forged record).
    fn record(properties: serde_json::Value) -> Vec<u8> {
        let now = "2024-05-01T12:00:00.250Z".parse().unwrap();
        let raw = json!({"event_type": "click", "url": "https://shop.example/a", "properties": {"__": 0}});
        let event = validate_event(&raw, now).unwrap().enrich(&ServerFacts {
            received_at: now,
            client_ip: Some("10.1.2.3".parse().unwrap()),
            user_agent: Some("curl/8".into()),
        });
        let text = String::from_utf8(crate::encode_record(&event)).unwrap();
        text.replacen(r#"{"__":0}"#, &properties.to_string(), 1).replacen(r#","properties":{}"#, "", 1).into_bytes()
    }

    fn read_bytes(bytes: &[u8]) -> Option<EnrichedEvent<'_>> {
        read(std::str::from_utf8(bytes).unwrap())
    }

    /// Invariant: a decimal taken as short is one serde_json writes back unchanged — over every
    /// digit count and position of the point it allows, and its edges.
    #[test]
    fn short_decimals_write_back_unchanged() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200_000 {
            let int_len = rng.usize(1..=8);
            let int: String =
                (0..int_len).map(|i| char::from(b'0' + rng.u8(u8::from(i == 0 && int_len > 1)..10))).collect();
            let fraction: String = (0..rng.usize(1..=16)).map(|_| char::from(b'0' + rng.u8(0..10))).collect();
            let token = format!("{}{int}.{fraction}", if rng.bool() { "-" } else { "" });
            if is_short_decimal(int.as_bytes(), fraction.as_bytes()) {
                assert!(writes_back_unchanged(&token), "{token}");
            }
        }
        for short in ["0.1", "9999999.99999999", "0.123456789012345", "349.99", "-0.5"] {
            let (int, fraction) = short.trim_start_matches('-').split_once('.').unwrap();
            assert!(is_short_decimal(int.as_bytes(), fraction.as_bytes()), "{short}");
            assert!(writes_back_unchanged(short), "{short}");
        }
        for other in ["0.01", "10000000.5", "0.1234567890123456", "1.50", "1.0"] {
            let (int, fraction) = other.split_once('.').unwrap();
            assert!(!is_short_decimal(int.as_bytes(), fraction.as_bytes()), "{other}");
        }
    }

    /// Invariant: the word-at-a-time scan finds the first quote wherever it is, next to any byte.
    #[test]
    fn find_quote_finds_the_first_quote() {
        for len in 0..40 {
            for filler in [b'a', b'"' ^ 0x80, 0x21, 0x23, 0xa2, 0x02, 0xff] {
                let mut bytes = vec![filler; len];
                assert_eq!(find_quote(&bytes), None);
                for at in 0..len {
                    bytes[at] = b'"';
                    assert_eq!(find_quote(&bytes), Some(at), "{len} {filler} {at}");
                    bytes[at] = filler;
                }
                if len > 1 {
                    bytes[len - 1] = b'"';
                    bytes[len / 2] = b'"';
                    assert_eq!(find_quote(&bytes), Some(len / 2));
                }
            }
        }
    }

    /// Invariant: a record the producer writes is read here, whole and borrowed, with the same
    /// result as the general path.
    #[test]
    fn reads_what_the_producer_writes() {
        let bytes =
            record(json!({"sku": "EM-1", "price": 349.99, "n": -12, "tags": ["a", true, null], "x": {"y": []}}));
        let fast = read_bytes(&bytes).expect("canonical");
        assert!(matches!(fast.url, Some(Cow::Borrowed(_))));
        assert!(bytes.as_ptr_range().contains(&fast.properties.json().as_ptr()), "properties were copied");
        let general: crate::Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(fast, general.event);
        assert!(read_bytes(&record(json!({}))).is_some_and(|e| e.properties.is_empty()));
    }

    /// Invariant: anything outside the canonical form is left to the general path, which then
    /// decides (and names the reason) — the rules at their limits included.
    #[test]
    fn hands_back_what_it_does_not_recognise() {
        let depth_5 = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        let depth_6 = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
        assert!(read_bytes(&record(depth_5)).is_some());
        assert!(read_bytes(&record(depth_6)).is_none());
        let items = |n: usize| json!({"l": (0..n).collect::<Vec<_>>()});
        assert!(read_bytes(&record(items(100))).is_some());
        assert!(read_bytes(&record(items(101))).is_none());
        let keys = |n: usize| json!((0..n).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>());
        assert!(read_bytes(&record(keys(50))).is_some());
        assert!(read_bytes(&record(keys(51))).is_none());
        assert!(read_bytes(&record(json!({"s": "é".repeat(1024)}))).is_some());
        assert!(read_bytes(&record(json!({"s": "é".repeat(1025)}))).is_none());
        assert!(read_bytes(&record(json!({"k".repeat(129): 1}))).is_none());
        assert!(read_bytes(&record(json!({"q": "say \"hi\""}))).is_none(), "escapes go to the general path");

        let canonical = String::from_utf8(record(json!({"n": 1.5}))).unwrap();
        for (from, to) in [
            ("1.5", "1.50"),
            ("1.5", "15e-1"),
            ("1.5", "-0"),
            ("1.5", "1234567890123456789"),
            (r#"{"v":1,"#, r#"{"v": 1,"#),
            (r#"{"v":1,"#, r#"{"v":2,"#),
            ("}}", "}} "),
            ("}}", "},\"x\":1}"),
        ] {
            let mangled = canonical.replacen(from, to, 1);
            assert_ne!(mangled, canonical);
            assert!(read(&mangled).is_none(), "{mangled}");
        }
        let event = canonical.strip_prefix(r#"{"v":1,"event":"#).and_then(|s| s.strip_suffix('}')).unwrap();
        let url = r#""url":"https://shop.example/a""#;
        for (forged, reason) in [
            (r#""url":"""#.to_owned(), "url: must not be empty"),
            (format!(r#""url":"{}""#, "u".repeat(2049)), "url: is 2049 characters, the limit is 2048"),
            (r#""url":"a\u0001b""#.to_owned(), "url: must not contain control characters"),
        ] {
            let mangled = canonical.replacen(url, &forged, 1);
            assert!(read(&mangled).is_none(), "{mangled}");
            let err = crate::decode_record(mangled.as_bytes()).unwrap_err();
            assert_eq!(err, crate::DecodeError::Invalid(crate::ValidationError::new("url", &reason[5..])));
        }
        // A key twice in one object: left to the general path, which refuses it by name.
        for (from, to, field) in [
            (r#"{"n":1.5}"#, r#"{"n":1.5,"n":2}"#, "properties"),
            (r#"{"n":1.5}"#, r#"{"n":{"a":[{"b":1,"c":2,"b":3}]}}"#, "properties.n.a.0"),
        ] {
            let mangled = canonical.replacen(from, to, 1);
            assert!(read(&mangled).is_none(), "{mangled}");
            match crate::decode_record(mangled.as_bytes()).unwrap_err() {
                crate::DecodeError::Invalid(e) => assert_eq!(e.field, field, "{e}"),
                other => panic!("{mangled}: {other}"),
            }
        }
        let reordered = format!(r#"{{"event":{event},"v":1}}"#);
        assert!(read(&reordered).is_none());
        assert!(crate::decode_record(reordered.as_bytes()).is_ok(), "the general path still reads it");
    }

    /// A JSON value inside `properties`. Plain ones are in the producer's form (so that the
    /// reader takes them, and edits of them test it); exotic ones add numbers of every kind (the
    /// decimals a double prints, huge integers), strings with quotes, backslashes and controls,
    /// and nesting past the depth limit.
    fn any_property(exotic: bool) -> proptest::strategy::BoxedStrategy<serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let plain = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-100_000i64..100_000).prop_map(Value::from),
            (-100_000i64..100_000).prop_map(|cents| Value::from(cents as f64 / 100.0)),
            "[a-zé0-9 /-]{0,12}".prop_map(Value::String),
        ];
        let leaf = if exotic {
            prop_oneof![
                3 => plain,
                1 => any::<i64>().prop_map(Value::from),
                1 => any::<u64>().prop_map(Value::from),
                1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                1 => "(?s)[a-zé\"\\\\\u{7f}\u{1}/ ]{0,12}".prop_map(Value::String),
            ]
            .boxed()
        } else {
            plain.boxed()
        };
        let key = if exotic { "[a-z\"é]{1,6}" } else { "[a-z]{1,6}" };
        leaf.prop_recursive(7, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
    }

    /// One random edit of a record: a byte replaced by, or an insertion of, a byte that matters
    /// to JSON or to the rules; or a byte removed.
    fn mangle(record: &[u8], at: usize, edit: u8, byte: u8) -> Vec<u8> {
        const BYTES: &[u8] = b"\"\\{}[],:0-.eE 1a\x7f\x01tnf";
        let mut out = record.to_vec();
        let at = at % (out.len() + 1);
        let byte = BYTES[byte as usize % BYTES.len()];
        match edit % 3 {
            0 if at < out.len() => out[at] = byte,
            1 if at < out.len() => {
                out.remove(at);
            }
            _ => out.insert(at, byte),
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Invariant: whenever the canonical reader takes a record, the general path reads it
        /// to the same event (or fails it with the same reason) — on the producer's records and
        /// on every one-byte edit of them.
        #[test]
        fn canonical_reader_agrees_with_the_general_path(
            (properties, url) in proptest::strategy::Strategy::prop_flat_map(proptest::bool::weighted(0.3), |exotic| (
                proptest::collection::vec(("[a-z]{1,6}", any_property(exotic)), 0..8),
                proptest::option::of(if exotic { "(?s)[a-z:/.\"\\\\é?=&\u{7f}]{1,30}" } else { "https://[a-z]{1,8}\\.example/[a-z0-9/?=&é-]{0,20}" }),
            )),
            at in proptest::prelude::any::<usize>(),
            edit in proptest::prelude::any::<u8>(),
            byte in proptest::prelude::any::<u8>(),
            // Each precision chrono writes (0, 3, 6 or 9 fraction digits), for both timestamps.
            received_nanos in proptest::sample::select(vec![0u32, 250_000_000, 123_456_000, 123_456_789]),
            occurred_nanos in proptest::sample::select(vec![0u32, 250_000_000, 123_456_000, 123_456_789]),
            // The producer's optional facts, present or not (records from before sites and
            // before the country lookup lack them).
            site in proptest::option::of("[a-z-]{1,12}"),
            country in proptest::option::of("[A-Z]{2}"),
        ) {
            let time = |nanos| chrono::DateTime::<chrono::Utc>::from_timestamp(1_714_564_800, nanos).unwrap();
            let (now, occurred) = (time(received_nanos), time(occurred_nanos) - chrono::Duration::seconds(2));
            let properties: serde_json::Map<_, _> = properties.into_iter().collect();
            let raw = json!({"event_type": "click", "url": url, "occurred_at": occurred.to_rfc3339(), "properties": properties});
            let Ok(valid) = validate_event(&raw, now) else { return Ok(()) };
            let mut event = valid.enrich(&ServerFacts { received_at: now, client_ip: None, user_agent: Some("ua".into()) });
            event.site = site.map(Into::into);
            event.country = country.map(Into::into);
            let record = crate::encode_record(&event);
            for bytes in [record.clone(), mangle(&record, at, edit, byte)] {
                let Ok(text) = std::str::from_utf8(&bytes) else { continue };
                if let Some(fast) = read(text) {
                    proptest::prop_assert_eq!(Ok(fast), crate::envelope::decode_general(text), "{}", text);
                }
            }
        }
    }
}
