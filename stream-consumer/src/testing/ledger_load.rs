//! The PostgreSQL write-path workload: synthetic 500-event batches as the consumer claims them.
//!
//! `ledger_bench` (examples/ledger_bench.rs) drives N concurrent writers through the consumer's
//! own claim + aggregate transaction with these batches. The shape is what a busy deployment
//! sends: a few event types carry most events (the first [`HOT_TYPES`] types get
//! [`HOT_SHARE`] of them, the rest share the remainder), one site dominates, visitors come
//! from a large pool and pages from a few hundred paths, and a fraction of each batch repeats
//! event IDs another writer has already claimed (client retries and redeliveries).

use crate::aggregate::{Counts, Fact};
use crate::plan::{Claim, LakeObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Event types in the workload.
pub const EVENT_TYPES: usize = 20;
/// How many event types carry [`HOT_SHARE`] of the events.
pub const HOT_TYPES: usize = 3;
/// The share of events in the [`HOT_TYPES`] hottest types.
pub const HOT_SHARE: f64 = 0.8;
/// Sites in the workload; the first carries [`MAIN_SITE_SHARE`] of the events.
pub const SITES: usize = 4;
/// The share of events on the busiest site.
pub const MAIN_SITE_SHARE: f64 = 0.7;
/// Distinct visitors the events come from.
pub const VISITORS: usize = 50_000;
/// Distinct page paths.
pub const PAGES: usize = 300;
/// The visitors' countries (#23): each visitor is in one, so the country rows of a batch are as
/// many as its site and visitor pairs, whichever codes they hold.
pub const COUNTRIES: [&str; 12] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "NL", "CA", "ES", "IT", "PL"];

/// The names the workload draws from, built once per run.
#[derive(Debug, Clone)]
pub struct Pools {
    types: Vec<String>,
    sites: Vec<String>,
    visitors: Vec<String>,
    urls: Vec<String>,
}

impl Default for Pools {
    fn default() -> Self {
        let mut types: Vec<String> = ["page_view", "click", "add_to_cart"].map(String::from).to_vec();
        types.extend((types.len()..EVENT_TYPES).map(|i| format!("custom_{i:02}")));
        Pools {
            types,
            sites: (0..SITES).map(|i| format!("site-{i}")).collect(),
            visitors: (0..VISITORS).map(|i| format!("anon-{i:08x}")).collect(),
            urls: (0..PAGES).map(|i| format!("https://shop.example.com/p/{i}?utm_source=bench")).collect(),
        }
    }
}

/// One synthetic event: what the claim needs and what the counts are made of.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadEvent {
    pub event_id: Uuid,
    type_index: usize,
    site_index: usize,
    visitor_index: usize,
    url_index: usize,
}

/// One writer's batch: its claims, its lake object and its events.
#[derive(Debug, Clone)]
pub struct LoadBatch {
    pub claims: Vec<Claim>,
    pub objects: Vec<LakeObject>,
    pub events: Vec<LoadEvent>,
}

impl Pools {
    /// The index of a type: [`HOT_SHARE`] of draws land on the first [`HOT_TYPES`], evenly.
    fn pick_type(&self, rng: &mut fastrand::Rng) -> usize {
        if rng.f64() < HOT_SHARE { rng.usize(..HOT_TYPES) } else { rng.usize(HOT_TYPES..self.types.len()) }
    }

    fn pick_site(&self, rng: &mut fastrand::Rng) -> usize {
        if rng.f64() < MAIN_SITE_SHARE { 0 } else { rng.usize(1..self.sites.len()) }
    }

    /// A batch of `size` events of which `duplicates` (a fraction) reuse IDs from `recent`
    /// (IDs other batches claimed); `owner` and `lake_object` identify this batch as the
    /// consumer's hashes of a record and an object would.
    pub fn batch(
        &self,
        rng: &mut fastrand::Rng,
        size: usize,
        duplicates: f64,
        recent: &[Uuid],
        owner: i64,
    ) -> LoadBatch {
        let lake_object = rng.i64(..);
        let events: Vec<LoadEvent> = (0..size)
            .map(|_| LoadEvent {
                event_id: if !recent.is_empty() && rng.f64() < duplicates {
                    recent[rng.usize(..recent.len())]
                } else {
                    Uuid::from_u128(rng.u128(..) & !(0xF000 << 64) | (0x4000 << 64))
                },
                type_index: self.pick_type(rng),
                site_index: self.pick_site(rng),
                visitor_index: rng.usize(..self.visitors.len()),
                url_index: rng.usize(..self.urls.len()),
            })
            .collect();
        let claims = events.iter().map(|e| Claim { event_id: e.event_id, owner, lake_object }).collect();
        let objects = vec![LakeObject {
            id: lake_object,
            key: format!("events/bench/{lake_object:016x}.parquet"),
            visitors: Vec::new(),
        }];
        LoadBatch { claims, objects, events }
    }

    /// The counts of the events at `new` (the claims the ledger inserted), as the consumer
    /// computes them: every event received and occurred at `at`.
    pub fn counts(&self, batch: &LoadBatch, new: &[usize], at: DateTime<Utc>) -> Counts {
        Counts::of(new.iter().map(|&i| {
            let e = &batch.events[i];
            Fact {
                site: Some(&self.sites[e.site_index]),
                event_type: &self.types[e.type_index],
                received_at: at,
                occurred_at: at,
                visitor: Some(&self.visitors[e.visitor_index]),
                url: Some(&self.urls[e.url_index]),
                country: Some(COUNTRIES[e.visitor_index % COUNTRIES.len()]),
            }
        }))
    }
}

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: the mix is the one the bench report states: 80% of events in 3 types, the
    /// requested share of repeated IDs, and counts over exactly the claimed events.
    #[test]
    fn batches_have_the_stated_mix() {
        let pools = Pools::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let recent: Vec<Uuid> = (0..100).map(|i| Uuid::from_u128(i + 1)).collect();
        let batches: Vec<LoadBatch> = (0..40).map(|i| pools.batch(&mut rng, 500, 0.01, &recent, i)).collect();
        let events: Vec<&LoadEvent> = batches.iter().flat_map(|b| &b.events).collect();
        let hot = events.iter().filter(|e| e.type_index < HOT_TYPES).count() as f64 / events.len() as f64;
        assert!((hot - HOT_SHARE).abs() < 0.02, "hot share {hot}");
        let repeated = events.iter().filter(|e| recent.contains(&e.event_id)).count() as f64 / events.len() as f64;
        assert!((repeated - 0.01).abs() < 0.005, "repeated share {repeated}");
        assert!(batches.iter().all(|b| b.claims.len() == 500 && b.objects.len() == 1));
        assert!(events.iter().all(|e| e.event_id.get_version_num() == 4 || recent.contains(&e.event_id)));
        let at = Utc::now();
        let counts = pools.counts(&batches[0], &[0, 1, 2], at);
        assert_eq!(counts.totals.values().sum::<i64>(), 3);
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
