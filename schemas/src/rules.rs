//! Every rule of the event contract, each written once, and the error that names a broken one.
//!
//! Three readers apply these rules: the client validator (`event::validate_from`), the stream
//! check (`EnrichedEvent::check`, the properties walker) and the canonical record reader. They
//! used to carry their own copies, which could drift apart unnoticed; now each calls the same
//! function. A rule answers with a [`Broken`], a plain value that costs no allocation, so the
//! canonical reader can apply it on its hot path and simply drop the answer; only the paths that
//! report the failure turn it into the reason text ([`Broken::at`]).

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::*;

/// Which field of an event failed validation, and why. `field` is a dotted path
/// (`properties.cart.items`), or `""` for the event as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "event: {}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ValidationError {}

/// A broken rule, without the field it was broken at. Its `Display` is the reason clients and
/// dead-letter rows see, so the wording lives next to the rule it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    Empty,
    TooManyChars { len: usize, max: usize },
    Control,
    EventType,
    EventId,
    ReservedEventId,
    Timestamp,
    TooFarAhead,
    TooOld { max_age_secs: i64 },
    TooLarge { bytes: usize, max: usize },
    TooManyKeys,
    LongKey,
    LongString,
    TooDeep,
    TooManyItems,
}

impl Broken {
    /// The error naming `field` (a dotted path, or `""` for the whole event).
    pub(crate) fn at(self, field: impl Into<String>) -> ValidationError {
        ValidationError::new(field, self.to_string())
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Broken::Empty => f.write_str("must not be empty"),
            Broken::TooManyChars { len, max } => write!(f, "is {len} characters, the limit is {max}"),
            Broken::Control => f.write_str("must not contain control characters"),
            Broken::EventType => write!(f, "must match ^[a-z][a-z0-9_]{{0,{}}}$", MAX_EVENT_TYPE_LEN - 1),
            Broken::EventId => f.write_str("must be a UUID in 8-4-4-4-12 hyphenated form"),
            Broken::ReservedEventId => f.write_str(
                "must not be the nil UUID (all zeros) or the max UUID (all f): they are placeholders, and \
                 every client sending one would deduplicate against every other",
            ),
            Broken::Timestamp => f.write_str("must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z"),
            Broken::TooFarAhead => write!(
                f,
                "is more than {} minutes in the future (after correcting for the client's clock by sent_at)",
                MAX_FUTURE_SKEW_SECS / 60
            ),
            Broken::TooOld { max_age_secs } => write!(
                f,
                "is more than {} in the past (after correcting for the client's clock by sent_at)",
                age_text(max_age_secs)
            ),
            Broken::TooLarge { bytes, max } => write!(f, "is {bytes} bytes, the limit is {max}"),
            Broken::TooManyKeys => {
                write!(f, "has more than {MAX_PROPERTIES_KEYS} keys, the limit is {MAX_PROPERTIES_KEYS}")
            }
            Broken::LongKey => write!(f, "has a key longer than {MAX_PROPERTY_KEY_LEN} characters"),
            Broken::LongString => write!(f, "is longer than {MAX_PROPERTY_STRING_LEN} characters"),
            Broken::TooDeep => write!(f, "nests deeper than {MAX_PROPERTIES_DEPTH} levels"),
            Broken::TooManyItems => {
                write!(f, "has more than {MAX_PROPERTIES_ARRAY_ITEMS} items, the limit is {MAX_PROPERTIES_ARRAY_ITEMS}")
            }
        }
    }
}

/// The whole event, as compact JSON, within [`MAX_EVENT_BYTES`].
#[inline]
pub(crate) fn event_size(bytes: usize) -> Result<(), Broken> {
    at_most(bytes, MAX_EVENT_BYTES)
}

/// `^[a-z][a-z0-9_]{0,63}$`, checked by hand: the rule is simple and the regex crate is a large
/// dependency for one pattern. Because event types are stored as text and never used in paths,
/// this is about cardinality and readability, not injection.
#[inline]
pub(crate) fn event_type(s: &str) -> Result<(), Broken> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_EVENT_TYPE_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok { Ok(()) } else { Err(Broken::EventType) }
}

/// Only the canonical hyphenated form: the same ID must not arrive in two spellings and escape
/// deduplication. Nor the nil or max UUID: a client with an unset or placeholder ID would send
/// it for every event, and the stores would keep only the first of them, silently.
#[inline]
pub(crate) fn event_id(s: &str) -> Result<Uuid, Broken> {
    if s.len() != uuid::fmt::Hyphenated::LENGTH {
        return Err(Broken::EventId);
    }
    let id = Uuid::try_parse(s).map_err(|_| Broken::EventId)?;
    event_id_value(id).map(|()| id)
}

/// The half of [`event_id`] that holds for an ID already parsed (a record read back from the stream).
#[inline]
pub(crate) fn event_id_value(id: Uuid) -> Result<(), Broken> {
    if id.is_nil() || id.is_max() { Err(Broken::ReservedEventId) } else { Ok(()) }
}

/// A client's `occurred_at`: RFC 3339 with an upper-case `T` and an explicit offset, exactly
/// what the JSON Schema pattern allows.
pub(crate) fn timestamp(s: &str) -> Result<DateTime<Utc>, Broken> {
    if !is_timestamp_shape(s.as_bytes()) {
        return Err(Broken::Timestamp);
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| Broken::Timestamp)
}

/// A corrected `occurred_at` lies from `max_age` before `now` to [`MAX_FUTURE_SKEW_SECS`] after it,
/// both ends included. An event from further ahead would count in an hour that has not happened;
/// one older than `max_age` would reopen figures long reported (and year 0000 is no event time).
#[inline]
pub(crate) fn within_window(at: DateTime<Utc>, now: DateTime<Utc>, max_age: TimeDelta) -> Result<(), Broken> {
    if at - now > TimeDelta::seconds(MAX_FUTURE_SKEW_SECS) {
        Err(Broken::TooFarAhead)
    } else if now - at > max_age {
        Err(Broken::TooOld { max_age_secs: max_age.num_seconds() })
    } else {
        Ok(())
    }
}

/// An age as clients read it: whole days when it is a number of days, else hours or seconds.
fn age_text(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s => format!("{s} seconds"),
    }
}

/// The shape of the published pattern, `\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)`,
/// checked by hand. chrono alone also takes `z`, ` UTC`, a space before the offset, a Unicode
/// minus and leap seconds, which the pattern (and so the API description) does not; the value
/// ranges (month 01-12, hour 00-23, …) are left to chrono.
pub(crate) fn is_timestamp_shape(b: &[u8]) -> bool {
    // `d` stands for a digit; a plain loop over the pattern is what the stream's hot path can afford.
    const DATE_TIME: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    let Some(date_time) = b.get(..DATE_TIME.len()) else { return false };
    let shape = date_time.iter().zip(DATE_TIME).all(|(&c, &p)| if p == b'd' { c.is_ascii_digit() } else { c == p });
    if !shape || b[17] > b'5' {
        return false;
    }
    let mut i = DATE_TIME.len();
    if b.get(i) == Some(&b'.') {
        let fraction = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&fraction) {
            return false;
        }
        i += 1 + fraction;
    }
    match &b[i..] {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or `None` for any other form (the same shape as
/// [`is_timestamp_shape`] with a `Z`, read in one pass: every record carries two).
pub(crate) fn parse_utc_fast(b: &[u8]) -> Option<DateTime<Utc>> {
    let (date_time, rest) = b.split_at_checked(19)?;
    let &[y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2, b'T', h1, h2, b':', i1, i2, b':', s1 @ b'0'..=b'5', s2] =
        date_time
    else {
        return None;
    };
    let digit = |c: u8| {
        let v = c.wrapping_sub(b'0');
        (v < 10).then_some(u32::from(v))
    };
    let two = |a: u8, b: u8| Some(digit(a)? * 10 + digit(b)?);
    let year = two(y1, y2)? * 100 + two(y3, y4)?;
    let nanos = match rest {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            fraction.iter().try_fold(0u32, |n, &c| Some(n * 10 + digit(c)?))? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, two(m1, m2)?, two(d1, d2)?)?;
    let time = date.and_hms_nano_opt(two(h1, h2)?, two(i1, i2)?, two(s1, s2)?, nanos)?;
    Some(time.and_utc())
}

/// Writes `t` as `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z` — the text chrono's `Serialize`
/// gives (RFC 3339, `SecondsFormat::AutoSi`, `Z`) — into `buf`, or `None` for what that shape
/// cannot say (a year outside 0000–9999, a leap second): chrono formats those. The two
/// timestamps of every stream record are written here, because chrono's writer goes through
/// `fmt` one character at a time and serde_json then escapes each piece it is handed.
pub(crate) fn format_utc_fast<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let two = |out: &mut [u8], v: u32| {
        out[0] = b'0' + (v / 10) as u8;
        out[1] = b'0' + (v % 10) as u8;
    };
    let year = year as u32;
    two(&mut buf[0..2], year / 100);
    two(&mut buf[2..4], year % 100);
    buf[4] = b'-';
    two(&mut buf[5..7], t.month());
    buf[7] = b'-';
    two(&mut buf[8..10], t.day());
    buf[10] = b'T';
    two(&mut buf[11..13], t.hour());
    buf[13] = b':';
    two(&mut buf[14..16], t.minute());
    buf[16] = b':';
    two(&mut buf[17..19], t.second());
    let (digits, mut fraction) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    let mut end = 19;
    if digits > 0 {
        buf[19] = b'.';
        for i in (0..digits).rev() {
            buf[20 + i] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        end = 20 + digits;
    }
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).ok()
}

/// The length rule of one optional text field: fewest and most characters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextRule {
    pub field: &'static str,
    pub min: usize,
    pub max: usize,
}

pub(crate) const ANONYMOUS_ID: TextRule = TextRule { field: "anonymous_id", min: 1, max: MAX_ID_LEN };
pub(crate) const USER_ID: TextRule = TextRule { field: "user_id", min: 1, max: MAX_ID_LEN };
pub(crate) const SESSION_ID: TextRule = TextRule { field: "session_id", min: 1, max: MAX_ID_LEN };
pub(crate) const URL: TextRule = TextRule { field: "url", min: 1, max: MAX_URL_LEN };
// An empty referrer or agent is what a browser sends when there is none; it is not a mistake.
pub(crate) const REFERRER: TextRule = TextRule { field: "referrer", min: 0, max: MAX_URL_LEN };
pub(crate) const USER_AGENT: TextRule = TextRule { field: "user_agent", min: 0, max: MAX_USER_AGENT_LEN };

/// The text rules in the order `EnrichedEvent` declares the fields (and so checks them).
pub(crate) const TEXT_RULES: [TextRule; 6] = [ANONYMOUS_ID, USER_ID, SESSION_ID, URL, REFERRER, USER_AGENT];

impl TextRule {
    /// The length half of the rule; the canonical reader has ruled out control bytes already,
    /// for the whole record in one scan.
    #[inline(always)]
    pub(crate) fn length(&self, s: &str) -> Result<(), Broken> {
        if s.is_empty() && self.min > 0 {
            return Err(Broken::Empty);
        }
        chars_at_most(s, self.max).map_err(|len| Broken::TooManyChars { len, max: self.max })
    }

    /// The whole rule: length, then no control characters.
    #[inline]
    pub(crate) fn check(&self, s: &str) -> Result<(), Broken> {
        self.length(s)?;
        if has_control_byte(s.as_bytes()) { Err(Broken::Control) } else { Ok(()) }
    }
}

/// C0 controls and DEL. They have no place in identifiers or URLs and break log lines and CSV
/// exports downstream. In UTF-8 these bytes only ever stand for themselves, so a byte test finds
/// exactly the characters.
#[inline(always)]
pub(crate) fn is_control_byte(b: u8) -> bool {
    (b <= 0x1f) | (b == 0x7f)
}

/// Whether any byte is a control ([`is_control_byte`]); a branch-free scan per chunk lets the
/// compiler vectorise it.
#[inline]
fn has_control_byte(bytes: &[u8]) -> bool {
    bytes.chunks(32).any(|c| c.iter().fold(false, |any, &b| any | is_control_byte(b)))
}

/// More than `max` characters. A character is at least one byte, so only strings longer in
/// bytes need counting.
#[inline(always)]
pub(crate) fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

/// At most `max` characters; the count when there are more (only then is it worked out).
#[inline(always)]
fn chars_at_most(s: &str, max: usize) -> Result<(), usize> {
    if longer_than(s, max) { Err(s.chars().count()) } else { Ok(()) }
}

#[inline(always)]
fn at_most(bytes: usize, max: usize) -> Result<(), Broken> {
    if bytes > max { Err(Broken::TooLarge { bytes, max }) } else { Ok(()) }
}

/// `properties` as compact JSON within [`MAX_PROPERTIES_BYTES`].
#[inline]
pub(crate) fn properties_size(bytes: usize) -> Result<(), Broken> {
    at_most(bytes, MAX_PROPERTIES_BYTES)
}

/// A container may open inside one at `depth` (the `properties` object itself is depth 1).
#[inline(always)]
pub(crate) fn nesting(depth: usize) -> Result<(), Broken> {
    if depth < MAX_PROPERTIES_DEPTH { Ok(()) } else { Err(Broken::TooDeep) }
}

/// An object inside `properties` may have a `keys`-th key.
#[inline(always)]
pub(crate) fn key_count(keys: usize) -> Result<(), Broken> {
    if keys > MAX_PROPERTIES_KEYS { Err(Broken::TooManyKeys) } else { Ok(()) }
}

/// An array inside `properties` may have an `items`-th item.
#[inline(always)]
pub(crate) fn item_count(items: usize) -> Result<(), Broken> {
    if items > MAX_PROPERTIES_ARRAY_ITEMS { Err(Broken::TooManyItems) } else { Ok(()) }
}

/// A key inside `properties`.
#[inline(always)]
pub(crate) fn property_key(key: &str) -> Result<(), Broken> {
    if longer_than(key, MAX_PROPERTY_KEY_LEN) { Err(Broken::LongKey) } else { Ok(()) }
}

/// The keys of one JSON object, to refuse one sent twice: readers disagree on which of the two
/// values a repeated key has (serde_json and most parsers keep the last, some the first, some
/// both), so the stored text would mean different things to different readers of the lake.
/// Objects inside `properties` hold at most [`MAX_PROPERTIES_KEYS`] keys (counted before a key
/// is added here), so a linear scan is cheaper than hashing; the first few keys, borrowed from
/// the input in the common case of no escapes, live on the stack, so a typical object costs no
/// allocation.
#[derive(Default)]
pub(crate) struct KeySet<'k> {
    inline: [&'k str; KEYS_INLINE],
    len: usize,
    /// Keys past the inline ones, and keys the parser unescaped (so not borrowed from the input).
    spilled: Vec<std::borrow::Cow<'k, str>>,
}

/// Keys a [`KeySet`] holds without allocating: more than most objects in `properties` have.
const KEYS_INLINE: usize = 8;

impl<'k> KeySet<'k> {
    /// Whether `key` is already in the set. Keys are compared after JSON unescaping, so `"a"`
    /// and `"\u0061"` are the same key, as they are to every reader.
    #[inline]
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.inline[..self.len].contains(&key) || self.spilled.iter().any(|k| k == key)
    }

    #[inline]
    pub(crate) fn insert(&mut self, key: std::borrow::Cow<'k, str>) {
        match key {
            std::borrow::Cow::Borrowed(k) if self.len < KEYS_INLINE => {
                self.inline[self.len] = k;
                self.len += 1;
            }
            other => self.spilled.push(other),
        }
    }
}

/// The reason for a key sent twice in one object, naming the key (quoted as JSON, so that a
/// control character in it cannot break a log line).
pub(crate) fn duplicate_key(key: &str) -> String {
    format!("has a duplicate key {}", serde_json::to_string(key).unwrap_or_default())
}

/// A string value inside `properties`.
#[inline(always)]
pub(crate) fn property_string(s: &str) -> Result<(), Broken> {
    if longer_than(s, MAX_PROPERTY_STRING_LEN) { Err(Broken::LongString) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// What chrono's `Serialize` writes for `t`, without the JSON quotes.
    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t).unwrap().as_str().unwrap().to_owned()
    }

    proptest! {
        /// Invariant: the fast writer gives chrono's text for every instant of years 0000–9999,
        /// at every sub-second precision, and the fast reader reads it back to the same instant.
        #[test]
        fn fast_writer_is_chronos_text(secs in 0_i64..253_402_300_800, nanos in 0_u32..1_000_000_000, unit in 0_usize..4) {
            let nanos = [0, nanos - nanos % 1_000_000, nanos - nanos % 1_000, nanos][unit];
            let t = Utc.timestamp_opt(secs - 62_167_219_200, nanos).unwrap();
            let mut buf = [0u8; 30];
            let text = format_utc_fast(&t, &mut buf).expect("a year in 0000-9999");
            prop_assert_eq!(text, chrono_text(&t));
            prop_assert_eq!(parse_utc_fast(text.as_bytes()), Some(t));
        }
    }

    /// What the shape cannot say is left to chrono: years past 9999, and leap seconds.
    #[test]
    fn fast_writer_declines_what_chrono_must_write() {
        let mut buf = [0u8; 30];
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format_utc_fast(&far, &mut buf), None);
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000);
        assert_eq!(format_utc_fast(&leap.unwrap().and_utc(), &mut buf), None);
        let t = Utc.with_ymd_and_hms(2026, 12, 6, 21, 5, 9).unwrap() + chrono::TimeDelta::milliseconds(7);
        assert_eq!(format_utc_fast(&t, &mut buf), Some("2026-12-06T21:05:09.007Z"));
    }
}
