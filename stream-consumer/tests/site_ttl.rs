//! Per-site item lifetimes, through the real batch handler on in-memory stores (no server):
//! each DynamoDB item expires `received_at` + its site's `dynamodb_ttl_days`, or the default.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::EnrichedEvent;
use stream_consumer::in_memory::MemoryPipeline;
use stream_consumer::site_ttl::SiteTtl;
use stream_consumer::testing::{record_of, sample_event, seq, settings};

fn event_of_site(site: Option<&str>, received: DateTime<Utc>) -> EnrichedEvent<'static> {
    let mut e = sample_event("page_view", None, received);
    e.site = site.map(|s| s.to_owned().into());
    e
}

/// Invariant: an item's `expires_at` is its receive time plus its own site's lifetime.
#[tokio::test]
async fn each_item_expires_after_its_sites_lifetime() {
    let ttl =
        SiteTtl { default_days: 30, per_site: HashMap::from([("shop".to_owned(), 7), ("archive".to_owned(), 400)]) };
    let p = MemoryPipeline::in_memory(stream_consumer::handler::HandlerSettings { dynamodb_ttl: ttl, ..settings() });
    let received: DateTime<Utc> = Utc::now();
    let cases = [(Some("shop"), 7), (Some("archive"), 400), (Some("blog"), 30), (None, 30)];
    let events: Vec<_> = cases.iter().map(|(site, _)| event_of_site(*site, received)).collect();
    let records: Vec<_> = events.iter().enumerate().map(|(i, e)| record_of(&seq(i + 1), e)).collect();
    p.process(&records).await.unwrap();
    let items = p.items.items();
    for (event, (site, days)) in events.iter().zip(cases) {
        let item = &items[&event.event_id.to_string()];
        let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert_eq!(expires, event.received_at.timestamp() + days * 86_400, "{site:?}");
    }
}
