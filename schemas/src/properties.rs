//! The free-form `properties` object: its rules, checked in one streaming pass, and its compact JSON text.
//!
//! Properties are opaque to the pipeline: every store keeps them as JSON text. So they are never
//! built into a `serde_json::Value` tree on the hot paths; the producer checks them while
//! writing their compact form, and the consumer checks that text again without allocating.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::de::{BorrowedStr, visit_as_kind};
use crate::rules::{self, Broken, KeySet, ValidationError};

/// A `properties` object as JSON text; compared by text. The producer's is the compact text that
/// passed [`check_properties`]; the consumer's borrows the stream record (see [`Properties::check`]),
/// so a batch never copies it before it is written out.
#[derive(Clone)]
pub struct Properties<'a>(Text<'a>);

#[derive(Clone)]
enum Text<'a> {
    /// Raw JSON as serde_json holds it: written by the producer, or read by the general
    /// record decoder.
    Raw(Cow<'a, RawValue>),
    /// Borrowed from a stream record by the canonical reader (`crate::canonical`), which
    /// checked its syntax and rules while finding its end. serde_json offers no way to borrow a
    /// `RawValue` without parsing the text again, which is the cost this variant exists to save.
    Checked(&'a str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Properties<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Properties(Text::Raw(Cow::Borrowed(raw))))
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Text::Raw(raw) => raw.serialize(s),
            // Only tests and tools serialize an event read back from the stream; the text was
            // checked as JSON, so this parse (borrowing, no copy) cannot fail.
            Text::Checked(text) => {
                serde_json::from_str::<&RawValue>(text).map_err(serde::ser::Error::custom)?.serialize(s)
            }
        }
    }
}

impl<'a> Properties<'a> {
    /// Wraps text the canonical reader has checked against every rule (see `crate::canonical`).
    pub(crate) fn checked(text: &'a str) -> Properties<'a> {
        Properties(Text::Checked(text))
    }
}

impl Properties<'_> {
    /// `{}`: what an event without properties carries.
    pub fn empty() -> Properties<'static> {
        Properties(Text::Checked("{}"))
    }

    /// The same text, borrowed from this one.
    pub fn borrowed(&self) -> Properties<'_> {
        match &self.0 {
            Text::Raw(raw) => Properties(Text::Raw(Cow::Borrowed(raw))),
            Text::Checked(text) => Properties(Text::Checked(text)),
        }
    }

    /// The same text, owned.
    pub fn into_owned(self) -> Properties<'static> {
        match self.0 {
            Text::Raw(raw) => Properties(Text::Raw(Cow::Owned(raw.into_owned()))),
            Text::Checked("{}") => Properties::empty(),
            Text::Checked(text) => Properties::from_checked(text.as_bytes().to_vec()),
        }
    }

    /// The JSON text, as stored in the lake and in DynamoDB.
    pub fn json(&self) -> &str {
        match &self.0 {
            Text::Raw(raw) => raw.get(),
            Text::Checked(text) => text,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.json() == "{}"
    }

    /// The object as a `serde_json` map, for tests and tools (the pipeline never needs the tree).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.json()).unwrap_or_default()
    }

    /// Checks the rules and the object shape again, e.g. on a record read back from the stream,
    /// which anything holding the IAM permission could have written.
    pub fn check(&self) -> Result<(), ValidationError> {
        let mut de = serde_json::Deserializer::from_str(self.json());
        match check_properties(&mut de, &mut std::io::sink())? {
            Checked::Object(_) => Ok(()),
            Checked::Null => Err(ValidationError::new("properties", "must be an object, got null")),
        }
    }

    /// Wraps compact JSON text written by [`check_properties`].
    fn from_checked(text: Vec<u8>) -> Properties<'static> {
        // The text was written by this module from a parsed object, so it is UTF-8 JSON; the
        // fallback only exists so that a bug here surfaces as an empty object in a test, not a panic.
        let text = String::from_utf8(text).unwrap_or_else(|_| "{}".to_owned());
        RawValue::from_string(text).map_or_else(|_| Properties::empty(), |raw| Properties(Text::Raw(Cow::Owned(raw))))
    }
}

impl Default for Properties<'_> {
    fn default() -> Self {
        Properties::empty()
    }
}

impl PartialEq for Properties<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

/// What [`check_properties`] found.
#[derive(Debug)]
pub enum Checked {
    /// An object that passed every rule; its compact size in bytes.
    Object(usize),
    /// `null`, which counts as no properties.
    Null,
}

/// Checks a `properties` value read from `de` (depth, keys per object, no key twice in one
/// object, key and string lengths, array lengths, compact size) and writes its compact JSON to `out`. The first rule broken is
/// returned, with the dotted path of the value that broke it.
pub fn check_properties<'de, D: Deserializer<'de>>(de: D, out: &mut impl Write) -> Result<Checked, ValidationError> {
    let mut error = None;
    match walk(de, out, &mut error) {
        Ok(checked) => checked,
        Err(e) => Err(error.unwrap_or_else(|| ValidationError::new("properties", format!("is not valid JSON: {e}")))),
    }
}

/// Reads `properties` inside a larger value (the client event), keeping its compact text. A
/// broken rule inside the object is stored in `error` and stops the parser (the rest of the
/// event cannot be read past it); a wrong kind or size is an inner `Err` and does not.
pub struct PropertiesSeed<'e> {
    pub error: &'e mut Option<ValidationError>,
}

impl<'de> DeserializeSeed<'de> for PropertiesSeed<'_> {
    type Value = Result<Option<Properties<'static>>, ValidationError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut text = Vec::with_capacity(128);
        Ok(match walk(d, &mut text, self.error)? {
            Ok(Checked::Null) => Ok(None),
            Ok(Checked::Object(_)) => Ok(Some(Properties::from_checked(text))),
            Err(e) => Err(e),
        })
    }
}

fn walk<'de, D: Deserializer<'de>>(
    de: D,
    out: &mut impl Write,
    error: &mut Option<ValidationError>,
) -> Result<Result<Checked, ValidationError>, D::Error> {
    let mut counted = Counted { inner: out, bytes: 0 };
    let mut walk = Walk { out: &mut counted, error: None };
    let shape = (TopSeed { walk: &mut walk }).deserialize(de);
    if let Some(mut e) = walk.error.take() {
        e.field.insert_str(0, "properties");
        *error = Some(e);
    }
    Ok(match shape? {
        Top::Null => Ok(Checked::Null),
        Top::NotObject(kind) => Err(ValidationError::new("properties", format!("must be an object, got {kind}"))),
        Top::Object => rules::properties_size(counted.bytes)
            .map(|()| Checked::Object(counted.bytes))
            .map_err(|b| b.at("properties")),
    })
}

struct Counted<'a, W> {
    inner: &'a mut W,
    bytes: usize,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The walk's state: the writer and the rule broken. The broken rule's path is built only when
/// there is one: each container on the way back out puts its key or index in front (keeping a
/// running path would cost a push and a truncate per key of every valid object).
struct Walk<'o, W> {
    out: &'o mut W,
    error: Option<ValidationError>,
}

impl<W: Write> Walk<'_, W> {
    /// Records the broken rule (its path relative to the value being read) and returns the
    /// error that stops the parser.
    fn fail<E: de::Error>(&mut self, broken: Broken) -> E {
        self.error = Some(broken.at(String::new()));
        E::custom("properties rule")
    }

    /// On the way out of a failed value: prefixes the broken rule's path with `.segment`.
    fn within(&mut self, segment: &dyn fmt::Display) {
        if let Some(e) = &mut self.error {
            e.field.insert_str(0, &format!(".{segment}"));
        }
    }

    fn put<E: de::Error>(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.write_all(bytes).map_err(E::custom)
    }

    /// A JSON string, escaped exactly as serde_json writes it.
    fn put_str<E: de::Error>(&mut self, s: &str) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, s).map_err(E::custom)
    }

    fn put_json<E: de::Error, T: Serialize>(&mut self, v: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, v).map_err(E::custom)
    }

    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A, depth: usize) -> Result<(), A::Error> {
        self.put(b"{")?;
        let mut keys = 0;
        let mut seen = KeySet::default();
        while let Some(BorrowedStr(key)) = map.next_key::<BorrowedStr<'de>>()? {
            keys += 1;
            rules::key_count(keys).and_then(|()| rules::property_key(&key)).map_err(|b| self.fail(b))?;
            if seen.contains(&key) {
                self.error = Some(ValidationError::new(String::new(), rules::duplicate_key(&key)));
                return Err(de::Error::custom("properties rule"));
            }
            if keys > 1 {
                self.put(b",")?;
            }
            self.put_str(&key)?;
            self.put(b":")?;
            if let Err(e) = map.next_value_seed(ValueSeed { walk: self, depth }) {
                self.within(&key);
                return Err(e);
            }
            seen.insert(key);
        }
        self.put(b"}")
    }
}

enum Top {
    Object,
    Null,
    NotObject(&'static str),
}

/// The `properties` value itself: an object (depth 1), `null`, or the wrong kind.
struct TopSeed<'w, 'o, W> {
    walk: &'w mut Walk<'o, W>,
}

impl<'de, W: Write> DeserializeSeed<'de> for TopSeed<'_, '_, W> {
    type Value = Top;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, W: Write> Visitor<'de> for TopSeed<'_, '_, W> {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
        self.walk.object(map, 1).map(|()| Top::Object)
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::Null)
    }
    fn visit_none<E>(self) -> Result<Top, E> {
        Ok(Top::Null)
    }
    visit_as_kind!('de, Top, Top::NotObject);
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::NotObject("a string"))
    }
}

/// Any value inside `properties`; `depth` is the depth of the container holding it.
struct ValueSeed<'w, 'o, W> {
    walk: &'w mut Walk<'o, W>,
    depth: usize,
}

impl<W: Write> ValueSeed<'_, '_, W> {
    fn nested<E: de::Error>(&mut self) -> Result<(), E> {
        rules::nesting(self.depth).map_err(|b| self.walk.fail(b))
    }
}

impl<'de, W: Write> DeserializeSeed<'de> for ValueSeed<'_, '_, W> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, W: Write> Visitor<'de> for ValueSeed<'_, '_, W> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        self.nested()?;
        self.walk.object(map, self.depth + 1)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.nested()?;
        self.walk.put(b"[")?;
        let mut items = 0;
        loop {
            let more = match seq.next_element_seed(ItemSeed {
                walk: &mut *self.walk,
                depth: self.depth + 1,
                first: items == 0,
            }) {
                Ok(more) => more,
                Err(e) => {
                    self.walk.within(&items);
                    return Err(e);
                }
            };
            if more.is_none() {
                break;
            }
            items += 1;
            rules::item_count(items).map_err(|b| self.walk.fail(b))?;
        }
        self.walk.put(b"]")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        rules::property_string(s).map_err(|b| self.walk.fail(b))?;
        self.walk.put_str(s)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.walk.put(if v { b"true" } else { b"false" })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk.put_json(&v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk.put_json(&v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.walk.put_json(&v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.walk.put(b"null")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.walk.put(b"null")
    }
}

/// One array item: writes the separator, then the value, at the item's path.
struct ItemSeed<'w, 'o, W> {
    walk: &'w mut Walk<'o, W>,
    depth: usize,
    first: bool,
}

impl<'de, W: Write> DeserializeSeed<'de> for ItemSeed<'_, '_, W> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if !self.first {
            self.walk.put(b",")?;
        }
        ValueSeed { walk: self.walk, depth: self.depth }.deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_text(text: &str) -> Result<Checked, ValidationError> {
        check_properties(&mut serde_json::Deserializer::from_str(text), &mut std::io::sink())
    }

    /// Invariant: the text written is exactly serde_json's compact form of the object, in the
    /// client's key order, and its size is what the size rule counts.
    #[test]
    fn writes_compact_json_in_client_order() {
        let text = r#" { "z" : [1, -2, 3.5, true, null, "\u00e9\n"], "a": {"b": {}} } "#;
        let mut out = Vec::new();
        let checked = check_properties(&mut serde_json::Deserializer::from_str(text), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "{\"z\":[1,-2,3.5,true,null,\"é\\n\"],\"a\":{\"b\":{}}}");
        assert!(matches!(checked, Checked::Object(n) if n == out.len()));
    }

    /// Invariant: text and parsed value give the same verdict and the same path.
    #[test]
    fn rules_name_the_path_alike_for_text_and_value() {
        let cases = [
            (json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}), "properties.a.b.c.d.e"),
            (json!({"a": [[[[[1]]]]]}), "properties.a.0.0.0.0"),
            (json!({"l": (0..101).collect::<Vec<_>>()}), "properties.l"),
            (json!({"s": "x".repeat(1025)}), "properties.s"),
            (json!({"k": ["ok", "y".repeat(1025)]}), "properties.k.1"),
            (json!({"k".repeat(129): 1}), "properties"),
            (json!((0..51).map(|i| (format!("k{i}"), json!(i))).collect::<Map<_, _>>()), "properties"),
            (json!((0..9).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect::<Map<_, _>>()), "properties"),
            (json!([1]), "properties"),
        ];
        for (value, path) in cases {
            let by_value = check_properties(&value, &mut std::io::sink()).unwrap_err();
            let by_text = from_text(&value.to_string()).unwrap_err();
            assert_eq!(by_value.field, path, "{value}: {by_value}");
            assert_eq!(by_text, by_value, "{value}");
        }
        let ok = json!({"a": {"b": {"c": {"d": {"e": 1}}}}, "z": [[[[1]]]], "l": (0..100).collect::<Vec<_>>(), "s": "é".repeat(1024)});
        assert!(matches!(from_text(&ok.to_string()), Ok(Checked::Object(_))));
        assert!(matches!(from_text("null"), Ok(Checked::Null)));
    }

    /// Invariant: numbers JSON allows but a double cannot hold are refused, not stored as text
    /// a reader would turn into infinity.
    #[test]
    fn out_of_range_numbers_are_refused() {
        assert!(from_text(r#"{"n": 1e400}"#).is_err());
        assert!(from_text(r#"{"n": 1e300}"#).is_ok());
    }

    /// Invariant (#20): a key twice in one object, at any depth and however it is spelled
    /// (escapes are compared decoded), is refused naming the key and the object it is in;
    /// the same key in two different objects is not a duplicate.
    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_spelling() {
        let cases = [
            (r#"{"a":1,"a":2}"#, "properties", r#"has a duplicate key "a""#),
            (r#"{"a":1,"\u0061":2}"#, "properties", r#"has a duplicate key "a""#),
            (r#"{"\u00e9":1,"é":2}"#, "properties", r#"has a duplicate key "é""#),
            (r#"{"x":{"b":1,"c":{},"b":null}}"#, "properties.x", r#"has a duplicate key "b""#),
            (r#"{"x":[{"k":1},{"k":1,"k":1}]}"#, "properties.x.1", r#"has a duplicate key "k""#),
            (r#"{"a":{"b":{"c":{"d":{"e":1,"e":2}}}}}"#, "properties.a.b.c.d", r#"has a duplicate key "e""#),
            (r#"{"q\"\n":1,"q\"\u000a":2}"#, "properties", r#"has a duplicate key "q\"\n""#),
        ];
        // Past the inline keys too: the ninth and later keys are compared as well.
        let many = (0..12).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",");
        let late = format!(r#"{{{many},"k3":0}}"#);
        let escaped_late = format!(r#"{{{many},"\u006b11":0}}"#);
        for (text, field, reason) in cases
            .into_iter()
            .chain([(&*late, "properties", r#"has a duplicate key "k3""#)])
            .chain([(&*escaped_late, "properties", r#"has a duplicate key "k11""#)])
        {
            assert_eq!(from_text(text).unwrap_err(), ValidationError::new(field, reason), "{text}");
            let stored: Properties = serde_json::from_str(text).unwrap();
            assert_eq!(stored.check().unwrap_err().field, field, "the stream check refuses it too: {text}");
        }
        for ok in [r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#, r#"{"a":1,"A":2,"a ":3}"#, "{}"] {
            assert!(matches!(from_text(ok), Ok(Checked::Object(_))), "{ok}");
        }
    }

    #[test]
    fn stored_properties_check_again() {
        assert!(Properties::empty().check().is_ok());
        let forged: Properties = serde_json::from_str(r#"{"a": [[[[[1]]]]]}"#).unwrap();
        assert_eq!(forged.check().unwrap_err().field, "properties.a.0.0.0.0");
        let array: Properties = serde_json::from_str("[1]").unwrap();
        assert_eq!(array.check().unwrap_err().field, "properties");
        assert_eq!(serde_json::from_str::<Properties>(r#"{"b":1}"#).unwrap().to_map()["b"], 1);
    }
}
