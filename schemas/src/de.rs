//! Serde pieces shared by the two streaming readers, of the client event and of `properties`.
//!
//! They sit below both readers so that `event` can use `properties` without `properties`
//! reaching back into `event`.

use std::borrow::Cow;

use serde::Deserialize;

/// A JSON string (a field name, say), borrowed from the input when it has no escapes: serde's
/// `Cow<str>` alone always copies.
#[derive(Debug, Deserialize)]
pub struct BorrowedStr<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The `visit_*` methods for the kinds of value that a visitor only reports by name — booleans,
/// numbers and arrays (read to their end) — as `$wrap(name)`. Three visitors share them: the
/// event itself, a top-level field and `properties`, each of which wants an object or a string.
macro_rules! visit_as_kind {
    ($de:lifetime, $value:ty, $wrap:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($wrap("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($wrap("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($wrap("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($wrap("a number"))
        }
        fn visit_seq<A: serde::de::SeqAccess<$de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($wrap("an array"))
        }
    };
}
pub(crate) use visit_as_kind;
