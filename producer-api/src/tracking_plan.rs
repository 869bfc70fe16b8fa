//! The tracking plan: per event type, a JSON Schema (draft 2020-12) for `properties`, enforced or warned about.
//!
//! `schemas/tracking-plan/<event_type>.json` holds the plan of one event type; its top-level
//! `x-mode` says what a violation does: `enforce` rejects the event (naming the JSON Pointer of
//! the failing field and the rule), `warn` accepts it and records the violations in the event's
//! `plan_violations` (a lake column). Event types without a plan are free. The files are embedded
//! at build time (build.rs) and compiled once, at start-up: a bad plan stops the producer from
//! starting rather than letting it accept what the plan forbids. `make plan-check` runs the same
//! checks ([`lint`]) on the files.

use std::collections::HashMap;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use schemas::limits::{MAX_PLAN_VIOLATIONS, MAX_PLAN_VIOLATIONS_BYTES};
use serde::Serialize;
use serde_json::Value;

use crate::error::IngestError;

include!(concat!(env!("OUT_DIR"), "/tracking_plans.rs"));

/// The dialect every plan declares in `$schema`.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// What a violation of an event type's plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The event is rejected, naming the failing field and rule.
    Enforce,
    /// The event is accepted; its violations travel with it to the lake (`plan_violations`).
    Warn,
}

/// One event type's compiled plan.
#[derive(Debug)]
pub struct Plan {
    pub mode: Mode,
    validator: Validator,
    /// For a plan whose root says only which named properties exist and what each holds
    /// (`properties`, `required`; see [`ROOT_KEYWORDS_OF_A_LISTING`]): those names, sorted. Only
    /// those keys of an event's properties can break such a plan, so only their values are read
    /// into a tree. `None`: the plan sees the whole object.
    listed: Option<Vec<String>>,
}

/// The root keywords of a plan that constrains named properties only: no keyword here looks at a
/// key the plan does not name (unlike `additionalProperties`, `patternProperties`,
/// `propertyNames`, `maxProperties`, `$ref`, combinators, …).
const ROOT_KEYWORDS_OF_A_LISTING: [&str; 9] =
    ["$schema", "$id", "$comment", "title", "description", "x-mode", "type", "properties", "required"];

/// Every event type's plan, compiled once.
#[derive(Debug, Default)]
pub struct TrackingPlans {
    plans: HashMap<String, Plan>,
}

/// One broken rule of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON Pointer of the failing value in the event (`/properties/amount`).
    pub pointer: String,
    /// The schema keyword that failed (`minimum`, `required`, `type`, …).
    pub rule: String,
    /// What is wrong, without the value itself (clients' data stays out of messages and logs).
    pub message: String,
}

/// What an event's plan says about its `properties`.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No plan for the type, or every rule holds.
    Clean,
    /// An `enforce` plan failed: the first violation, for the event's rejection.
    Reject(Violation),
    /// A `warn` plan failed: its violations as a JSON array, for `plan_violations`.
    Warn(String),
}

impl TrackingPlans {
    /// The plans built into this binary (see build.rs), compiled on first use and then shared
    /// by the whole process; an error names the bad file.
    pub fn embedded() -> Result<&'static Self, IngestError> {
        static PLANS: std::sync::OnceLock<Result<TrackingPlans, IngestError>> = std::sync::OnceLock::new();
        PLANS.get_or_init(|| Self::from_files(PLAN_FILES.iter().copied())).as_ref().map_err(IngestError::clone)
    }

    /// Plans from `(file name, text)` pairs, each held to [`lint`].
    pub fn from_files<'f>(files: impl IntoIterator<Item = (&'f str, &'f str)>) -> Result<Self, IngestError> {
        let mut plans = HashMap::new();
        for (file, text) in files {
            let (event_type, plan) = lint(file, text)?;
            plans.insert(event_type, plan);
        }
        Ok(TrackingPlans { plans })
    }

    /// The event types that have a plan, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.plans.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// The plan of `event_type`, if it has one.
    pub fn get(&self, event_type: &str) -> Option<&Plan> {
        self.plans.get(event_type)
    }

    /// Checks an event's `properties` (compact JSON, as the validator wrote them) against its
    /// type's plan. Types without a plan cost one hash lookup; with one, the properties are
    /// parsed into a tree (the only place the request path builds one) and validated; only a
    /// failing event pays for the error details.
    pub fn check(&self, event_type: &str, properties: &str) -> Verdict {
        let Some(plan) = self.plans.get(event_type) else { return Verdict::Clean };
        // The properties passed the contract's rules, so they are valid JSON; an absent
        // `properties` is checked as the empty object.
        let value = match &plan.listed {
            Some(names) => {
                let mut de = serde_json::Deserializer::from_str(properties);
                Value::Object(serde::de::DeserializeSeed::deserialize(Listed(names), &mut de).unwrap_or_default())
            }
            None => serde_json::from_str(properties).unwrap_or_else(|_| Value::Object(Default::default())),
        };
        if plan.validator.is_valid(&value) {
            return Verdict::Clean;
        }
        let mut violations = plan.validator.iter_errors(&value).map(|e| violation(&e));
        match plan.mode {
            Mode::Enforce => violations.next().map_or(Verdict::Clean, Verdict::Reject),
            Mode::Warn => Verdict::Warn(violations_json(violations)),
        }
    }
}

/// Reads only the listed keys of a JSON object into a map; every other value is skipped unread.
struct Listed<'n>(&'n [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Listed<'_> {
    type Value = serde_json::Map<String, Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Listed<'_> {
    type Value = serde_json::Map<String, Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(schemas::event::BorrowedStr(key)) = map.next_key()? {
            if self.0.binary_search_by(|n| n.as_str().cmp(&key)).is_ok() {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// The names a plan constrains, when its root only lists properties (see [`Plan::listed`]).
fn listed_names(schema: &Value) -> Option<Vec<String>> {
    let root = schema.as_object()?;
    if !root.keys().all(|k| ROOT_KEYWORDS_OF_A_LISTING.contains(&k.as_str())) {
        return None;
    }
    let mut names: Vec<String> =
        root.get("properties").and_then(Value::as_object).map_or_else(Vec::new, |p| p.keys().cloned().collect());
    if let Some(required) = root.get("required") {
        names.extend(required.as_array()?.iter().map(|n| n.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?);
    }
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// The rejection reason of an enforced violation: the rule, what is wrong, and which plan.
impl Violation {
    pub fn reason(&self, event_type: &str) -> String {
        format!("{} (tracking plan {event_type}, rule {})", self.message, self.rule)
    }
}

/// A validator error as a violation whose pointer is relative to the event: `/properties/…`.
/// A missing required property is named by its own pointer (the error is raised at the object
/// that lacks it), which is what a client has to add.
fn violation(error: &ValidationError<'_>) -> Violation {
    let mut pointer = format!("/properties{}", error.instance_path().as_str());
    if let ValidationErrorKind::Required { property: Value::String(name) } = error.kind() {
        pointer.push('/');
        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
    }
    Violation { pointer, rule: error.kind().keyword().to_owned(), message: error.masked().to_string() }
}

/// At most [`MAX_PLAN_VIOLATIONS`] violations as a JSON array of at most
/// [`MAX_PLAN_VIOLATIONS_BYTES`] bytes, so that a warned event always fits its stream record;
/// an event with more gets the first ones.
fn violations_json(violations: impl Iterator<Item = Violation>) -> String {
    let mut out = String::from("[");
    for v in violations.take(MAX_PLAN_VIOLATIONS) {
        let item = serde_json::to_string(&v).unwrap_or_default();
        if out.len() + item.len() + 2 > MAX_PLAN_VIOLATIONS_BYTES {
            break;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// Checks one plan file and compiles it: the file is `<event_type>.json` with an event type the
/// contract allows; the text is a JSON object declaring draft 2020-12 in `$schema`, valid against
/// that draft's meta-schema, for an object (`"type": "object"`), with `x-mode` `enforce` or
/// `warn`; and it compiles (no `$ref` that cannot be resolved offline).
pub fn lint(file: &str, text: &str) -> Result<(String, Plan), IngestError> {
    let bad = |reason: String| IngestError::TrackingPlan { file: file.to_owned(), reason };
    let event_type = file.strip_suffix(".json").ok_or_else(|| bad("is not a .json file".into()))?;
    if !schemas::event::is_event_type(event_type) {
        return Err(bad(format!("{event_type:?} is not an event type (^[a-z][a-z0-9_]{{0,63}}$)")));
    }
    let schema: Value = serde_json::from_str(text).map_err(|e| bad(format!("is not JSON: {e}")))?;
    if schema.get("$schema").and_then(Value::as_str) != Some(DRAFT_2020_12) {
        return Err(bad(format!("must declare \"$schema\": \"{DRAFT_2020_12}\"")));
    }
    let mode = match schema.get("x-mode").and_then(Value::as_str) {
        Some("enforce") => Mode::Enforce,
        Some("warn") => Mode::Warn,
        _ => return Err(bad("must have \"x-mode\": \"enforce\" or \"warn\"".into())),
    };
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(bad("must describe an object (\"type\": \"object\"): it is the event's properties".into()));
    }
    jsonschema::meta::validate(&schema)
        .map_err(|e| bad(format!("is not a valid draft 2020-12 schema at {}: {e}", e.instance_path())))?;
    let validator = jsonschema::draft202012::new(&schema).map_err(|e| bad(format!("does not compile: {e}")))?;
    Ok((event_type.to_owned(), Plan { mode, validator, listed: listed_names(&schema) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> &'static TrackingPlans {
        TrackingPlans::embedded().expect("the shipped plans compile")
    }

    /// The violations a warning carries, read back from its JSON text.
    fn read_violations(json: &str) -> Vec<Violation> {
        let text = |v: &Value, key: &str| v[key].as_str().unwrap().to_owned();
        serde_json::from_str::<Vec<Value>>(json)
            .unwrap()
            .iter()
            .map(|v| Violation { pointer: text(v, "pointer"), rule: text(v, "rule"), message: text(v, "message") })
            .collect()
    }

    /// Invariant: the shipped plans compile, and cover the demo's event types.
    #[test]
    fn shipped_plans_compile_and_cover_the_demo() {
        let plans = plans();
        for t in ["page_view", "click", "add_to_cart", "purchase", "search", "signup"] {
            assert!(plans.get(t).is_some(), "no plan for {t}");
        }
        assert_eq!(plans.get("purchase").unwrap().mode, Mode::Enforce);
        assert_eq!(plans.get("page_view").unwrap().mode, Mode::Warn);
    }

    /// Invariant: an enforced plan rejects with the failing field's JSON Pointer and the rule,
    /// missing required fields included; a clean event and a type without a plan pass.
    #[test]
    fn enforce_names_the_pointer_and_the_rule() {
        let plans = plans();
        let check = |properties: Value| plans.check("purchase", &properties.to_string());
        assert_eq!(check(json!({"amount": 25.5, "currency": "EUR", "order_id": "o-1"})), Verdict::Clean);
        assert_eq!(check(json!({"amount": 0, "currency": "USD"})), Verdict::Clean, "0 is allowed");
        for (properties, pointer, rule) in [
            (json!({"amount": -1, "currency": "EUR"}), "/properties/amount", "minimum"),
            (json!({"amount": "25", "currency": "EUR"}), "/properties/amount", "type"),
            (json!({"amount": 25, "currency": "eur"}), "/properties/currency", "pattern"),
            (json!({"amount": 25, "currency": "EURO"}), "/properties/currency", "pattern"),
            (json!({"currency": "EUR"}), "/properties/amount", "required"),
            (json!({}), "/properties/amount", "required"),
        ] {
            let Verdict::Reject(v) = check(properties.clone()) else { panic!("{properties} passed") };
            assert_eq!((v.pointer.as_str(), v.rule.as_str()), (pointer, rule), "{properties}: {v:?}");
            assert!(!v.message.contains("-1") && !v.message.contains("eur"), "the value leaked: {}", v.message);
        }
        let Verdict::Reject(v) = check(json!({"amount": -1, "currency": "EUR"})) else { unreachable!() };
        assert_eq!(v.reason("purchase"), format!("{} (tracking plan purchase, rule minimum)", v.message));
        assert_eq!(plans.check("no_plan_here", r#"{"amount":"anything"}"#), Verdict::Clean);
    }

    /// Invariant: a warned plan accepts and lists every violation (bounded), as JSON.
    #[test]
    fn warn_lists_violations_within_bounds() {
        let plans = TrackingPlans::from_files([(
            "probe.json",
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "x-mode": "warn", "type": "object",
                "required": ["q"], "properties": {"n": {"type": "integer", "minimum": 0}},
                "additionalProperties": {"type": "string", "maxLength": 2}}"#,
        )])
        .unwrap();
        assert_eq!(plans.check("probe", r#"{"q":"ok","n":1}"#), Verdict::Clean);
        let Verdict::Warn(text) = plans.check("probe", r#"{"n":-2}"#) else { panic!("no warning") };
        let listed = read_violations(&text);
        let mut named: Vec<(&str, &str)> = listed.iter().map(|v| (v.pointer.as_str(), v.rule.as_str())).collect();
        named.sort_unstable();
        assert_eq!(named, [("/properties/n", "minimum"), ("/properties/q", "required")]);
        // Fifty bad keys: a bounded list, still JSON.
        let many: serde_json::Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!("long"))).collect();
        let Verdict::Warn(text) = plans.check("probe", &Value::Object(many).to_string()) else { panic!() };
        let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(listed.len() <= MAX_PLAN_VIOLATIONS && text.len() <= MAX_PLAN_VIOLATIONS_BYTES, "{text}");
        assert!(!listed.is_empty());
    }

    /// Invariant: reading only the listed keys gives the verdict the whole object gives, for
    /// plans that only list properties; other plans see the whole object.
    #[test]
    fn listed_keys_give_the_whole_objects_verdict() {
        let listing = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "x-mode": "warn", "type": "object",
            "required": ["q"], "properties": {"n": {"type": "integer"}, "o": {"type": "object", "required": ["x"]}}}"#;
        let (_, plan) = lint("a.json", listing).unwrap();
        assert_eq!(plan.listed.as_deref(), Some(&["n".to_owned(), "o".to_owned(), "q".to_owned()][..]));
        let closed = listing.replace(r#""type": "object","#, r#""type": "object", "additionalProperties": false,"#);
        assert_eq!(lint("a.json", &closed).unwrap().1.listed, None);
        let plans = TrackingPlans::from_files([("a.json", listing), ("b.json", closed.as_str())]).unwrap();
        for properties in [
            json!({"q": 1}),
            json!({"q": 1, "n": 2, "z": "anything", "o": {"x": 1}}),
            json!({"n": "2", "z": [1, 2]}),
            json!({"q": null, "o": {"y": 1}, "k\"ey": 1}),
            json!({}),
        ] {
            let text = properties.to_string();
            let whole = |t: &str| {
                let plan = plans.get(t).unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                plan.validator.iter_errors(&v).map(|e| violation(&e)).collect::<Vec<_>>()
            };
            let listed = match plans.check("a", &text) {
                Verdict::Clean => vec![],
                Verdict::Warn(json) => read_violations(&json),
                Verdict::Reject(_) => unreachable!("a warn plan"),
            };
            assert_eq!(listed, whole("a"), "{text}");
            assert_eq!(plans.check("b", &text) == Verdict::Clean, whole("b").is_empty(), "{text}");
        }
    }

    /// Invariant: plan-check refuses each way a plan file can be wrong, naming the file.
    #[test]
    fn lint_refuses_bad_plans() {
        let ok =
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "x-mode": "enforce", "type": "object"}"#;
        assert!(lint("purchase.json", ok).is_ok());
        let no_mode = ok.replace(r#""x-mode": "enforce", "#, "");
        let bad_mode = ok.replace("enforce", "block");
        let no_type = ok.replace(r#", "type": "object""#, "");
        let bad_keyword =
            ok.replace(r#""type": "object""#, r#""type": "object", "properties": {"a": {"minimum": "zero"}}"#);
        let remote = ok.replace(r#""type": "object""#, r#""type": "object", "$ref": "https://example.com/x.json""#);
        for (file, text, why) in [
            ("Purchase.json", ok, "not an event type"),
            ("purchase.yaml", ok, "not a .json file"),
            ("purchase.json", "{", "is not JSON"),
            ("purchase.json", r#"{"x-mode": "enforce", "type": "object"}"#, "$schema"),
            (
                "purchase.json",
                r#"{"$schema": "http://json-schema.org/draft-07/schema#", "x-mode": "enforce", "type": "object"}"#,
                "$schema",
            ),
            ("purchase.json", no_mode.as_str(), "x-mode"),
            ("purchase.json", bad_mode.as_str(), "x-mode"),
            ("purchase.json", no_type.as_str(), "an object"),
            ("purchase.json", bad_keyword.as_str(), "draft 2020-12"),
            ("purchase.json", remote.as_str(), "compile"),
        ] {
            let err = lint(file, text).map(|_| ()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(file) && text.contains(why), "{file}: {text}");
        }
    }
}
