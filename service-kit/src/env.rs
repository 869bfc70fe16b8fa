//! Typed configuration from environment variables, with one error style for every binary.
//!
//! An empty value counts as unset: Terraform and shell scripts often export `NAME=""` for
//! "use the default".

use std::str::FromStr;
use std::time::Duration;

use crate::KitError;

/// A source of settings: the process environment, or any lookup (tests pass a closure).
pub struct Env<F> {
    lookup: F,
}

/// A configuration read from settings. Implement [`FromEnv::from_settings`]; callers get
/// [`FromEnv::from_env`] (the process environment, read once at start-up) and
/// [`FromEnv::from_lookup`] (any key-value source, so tests need not touch the environment).
pub trait FromEnv: Sized {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError>;

    fn from_env() -> Result<Self, KitError> {
        Self::from_settings(&process())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, KitError> {
        Self::from_settings(&Env::new(get))
    }
}

/// The process environment.
pub fn process() -> Env<impl Fn(&str) -> Option<String>> {
    Env::new(|name: &str| std::env::var(name).ok())
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The value of `name`, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// The value of `name`, which must be set.
    pub fn required(&self, name: &str) -> Result<String, KitError> {
        self.get(name).ok_or_else(|| KitError::MissingEnv { name: name.to_owned() })
    }

    /// `name` parsed as `T`, `None` when unset.
    pub fn parse_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, KitError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value.parse().map_err(|e: T::Err| KitError::InvalidEnv {
                    name: name.to_owned(),
                    reason: e.to_string(),
                    value,
                })
            })
            .transpose()
    }

    /// `name` parsed as `T`, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, KitError>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// `name` as a whole number of milliseconds, or `default_ms` when unset.
    pub fn millis_or(&self, name: &str, default_ms: u64) -> Result<Duration, KitError> {
        Ok(Duration::from_millis(self.parse_or(name, default_ms)?))
    }

    /// A setting that parsed but is not acceptable.
    pub fn invalid(&self, name: &str, reason: impl Into<String>) -> KitError {
        KitError::InvalidEnv { name: name.to_owned(), value: self.get(name).unwrap_or_default(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::new(move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn empty_counts_as_unset_and_errors_name_the_variable() {
        let e = env(&[("A", ""), ("N", "12"), ("BAD", "x1")]);
        assert_eq!(e.get("A"), None);
        assert_eq!(e.parse_or("A", 5u32).unwrap(), 5);
        assert_eq!(e.parse_or("N", 5u32).unwrap(), 12);
        assert_eq!(e.millis_or("N", 1).unwrap(), Duration::from_millis(12));
        let missing = e.required("A").unwrap_err().to_string();
        assert_eq!(missing, "environment variable A is required");
        let bad = e.parse_or("BAD", 0u32).unwrap_err().to_string();
        assert!(bad.starts_with("environment variable BAD=\"x1\" is invalid: "), "{bad}");
    }
}
