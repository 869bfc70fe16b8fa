//! The DynamoDB item layout: one item per event, keyed by `event_id`, expiring through TTL.

use chrono::{DateTime, Utc};

use crate::event::EnrichedEvent;

/// Partition key attribute (string). One item per event makes writes idempotent.
pub const PARTITION_KEY: &str = "event_id";
/// TTL attribute (number, epoch seconds) that DynamoDB's TTL feature is pointed at.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// An attribute value, independent of the AWS SDK so the layout stays pure and testable.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemValue {
    S(String),
    N(String),
    Bool(bool),
}

/// The attributes of the item for `event`. Optional fields are omitted rather than stored empty
/// (DynamoDB rejects empty key attributes and charges for every byte). Timestamps are ISO 8601
/// strings (sortable, readable); `expires_at` is `received_at + ttl_days`.
pub fn item(event: &EnrichedEvent<'_>, ttl_days: u32) -> Vec<(&'static str, ItemValue)> {
    let mut out = Vec::with_capacity(15);
    out.push((PARTITION_KEY, ItemValue::S(event.event_id.to_string())));
    out.push(("event_type", ItemValue::S(event.event_type.to_string())));
    out.push(("occurred_at", ItemValue::S(iso_millis(event.occurred_at))));
    out.push(("received_at", ItemValue::S(iso_millis(event.received_at))));
    for (name, value) in [
        ("anonymous_id", &event.anonymous_id),
        ("user_id", &event.user_id),
        ("session_id", &event.session_id),
        ("url", &event.url),
        ("referrer", &event.referrer),
        ("user_agent", &event.user_agent),
        ("client_ip", &event.client_ip),
        ("site", &event.site),
        ("country", &event.country),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            out.push((name, ItemValue::S(v.to_string())));
        }
    }
    if !event.properties.is_empty() {
        out.push(("properties", ItemValue::S(event.properties.json().to_owned())));
    }
    let expires = event.received_at.timestamp() + i64::from(ttl_days) * 86_400;
    out.push((TTL_ATTRIBUTE, ItemValue::N(expires.to_string())));
    out
}

/// `2024-05-01T12:00:00.123Z`
pub fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ServerFacts, validate_event};

    #[test]
    fn item_has_key_ttl_and_skips_absent_fields() {
        let now: DateTime<Utc> = "2024-05-01T12:00:00Z".parse().unwrap();
        let e = validate_event(&serde_json::json!({"event_type": "x", "user_id": "u1"}), now)
            .unwrap()
            .enrich(&ServerFacts { received_at: now, client_ip: None, user_agent: None });
        let item = item(&e, 30);
        let names: Vec<&str> = item.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["event_id", "event_type", "occurred_at", "received_at", "user_id", "expires_at"]);
        assert_eq!(item.last().unwrap().1, ItemValue::N((now.timestamp() + 30 * 86_400).to_string()));
    }

    /// Invariant: the producer's site and country are item attributes when the event has them.
    #[test]
    fn item_has_site_and_country() {
        let now: DateTime<Utc> = "2024-05-01T12:00:00Z".parse().unwrap();
        let mut e = validate_event(&serde_json::json!({"event_type": "x"}), now).unwrap().enrich(&ServerFacts {
            received_at: now,
            client_ip: None,
            user_agent: None,
        });
        (e.site, e.country) = (Some("local-demo".into()), Some("NZ".into()));
        let item = item(&e, 30);
        let value = |name: &str| item.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(value("site"), Some(ItemValue::S("local-demo".into())));
        assert_eq!(value("country"), Some(ItemValue::S("NZ".into())));
    }
}
