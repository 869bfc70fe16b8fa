//! Pure reconciliation: what each store holds vs what the API acknowledged, as one table.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use uuid::Uuid;

use crate::acks::Acks;

/// What one store holds: every event ID it has, with how many times, and its event type.
#[derive(Debug, Default)]
pub struct StoreView {
    pub name: &'static str,
    /// event_id → (event_type, occurrences). Occurrences > 1 is a double count.
    pub events: HashMap<Uuid, (String, u64)>,
}

impl StoreView {
    pub fn new(name: &'static str) -> Self {
        StoreView { name, events: HashMap::new() }
    }

    pub fn add(&mut self, id: Uuid, event_type: &str) {
        self.events.entry(id).or_insert_with(|| (event_type.to_owned(), 0)).1 += 1;
    }

    fn per_type(&self) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        for (t, _) in self.events.values() {
            *m.entry(t.clone()).or_default() += 1;
        }
        m
    }
}

/// Everything gathered for one check.
pub struct Observed {
    pub acks: Acks,
    /// The stream may legitimately carry an event more than once (a client retry whose first
    /// attempt landed), so it is checked for completeness only.
    pub stream: StoreView,
    pub lake: StoreView,
    pub dynamo: StoreView,
    /// PostgreSQL counts per event type.
    pub pg_counts: BTreeMap<String, i64>,
    /// `site_hourly` events per event type (all sites and hours).
    pub site_hourly: BTreeMap<String, i64>,
    /// `site_daily_pages` events and page views (all sites, days and pages).
    pub site_pages: SitePages,
    /// `site_daily_countries` events (all sites, days and countries, '' included).
    pub site_countries: i64,
    /// Dead-letter rows by reason code (distinct shard + sequence number).
    pub quarantined: BTreeMap<String, u64>,
    /// Acknowledged events of visitors erased since (`forget`): they must be gone from the lake
    /// and DynamoDB, and still counted in PostgreSQL, whose aggregates are anonymous and stay.
    pub erased: HashSet<Uuid>,
}

/// The totals of `site_daily_pages`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SitePages {
    pub events: i64,
    pub views: i64,
}

/// The event type whose events `site_daily_pages.views` counts.
const PAGE_VIEW: &str = "page_view";

/// The verdict and the printed table.
pub struct Report {
    pub ok: bool,
    pub problems: Vec<String>,
    pub table: String,
}

/// One store's line of the table: (name, rows, distinct, acknowledged missing, repeated), with
/// its problems. `erasable`: erased events must be absent (the lake, DynamoDB); the stream keeps
/// them until it expires, and may carry an event twice (a client retry whose first try landed).
fn store_row(
    store: &StoreView,
    erasable: bool,
    acked: &HashSet<&Uuid>,
    erased: &HashSet<&Uuid>,
    problems: &mut Vec<String>,
) -> (String, usize, usize, usize, u64) {
    let expected = |id: &&&Uuid| !(erasable && erased.contains(**id));
    let missing = acked.iter().filter(expected).filter(|id| !store.events.contains_key(**id)).count();
    if erasable {
        let left = erased.iter().filter(|id| store.events.contains_key(**id)).count();
        if left > 0 {
            problems.push(format!("{}: {left} forgotten events still stored", store.name));
        }
    }
    let dup: u64 = store.events.values().map(|(_, n)| n.saturating_sub(1)).sum();
    let total: u64 = store.events.values().map(|(_, n)| n).sum();
    if missing > 0 {
        problems.push(format!("{}: {missing} acknowledged events missing", store.name));
    }
    if dup > 0 && erasable {
        problems.push(format!("{}: {dup} events stored more than once", store.name));
    }
    (store.name.to_owned(), total as usize, store.events.len(), missing, dup)
}

/// Nothing lost: every acknowledged event is on the stream, in the lake, in DynamoDB (but for
/// erased events, which must be in neither of the last two). Nothing double-counted: no event
/// twice in the lake or DynamoDB, and PostgreSQL's count per type equals the lake's and
/// DynamoDB's distinct events per type plus the erased ones, and so do the per-site tables'
/// events (`site_hourly` per type; `site_daily_pages` in total, its views = page views;
/// `site_daily_countries` in total).
pub fn reconcile(o: &Observed) -> Report {
    let mut problems = Vec::new();
    let acked: HashSet<&Uuid> = o.acks.keys().collect();
    let erased: HashSet<&Uuid> = o.erased.iter().filter(|id| acked.contains(id)).collect();
    let mut rows = Vec::new();
    rows.push(("api acknowledged".to_owned(), o.acks.len(), o.acks.len(), 0usize, 0u64));
    for store in [&o.stream, &o.lake, &o.dynamo] {
        rows.push(store_row(store, store.name != o.stream.name, &acked, &erased, &mut problems));
    }
    let pg_total: i64 = o.pg_counts.values().sum();
    rows.push(("postgresql counts".to_owned(), pg_total as usize, pg_total as usize, 0, 0));
    let pages = o.site_pages;
    rows.push(("site_daily_pages".to_owned(), pages.events as usize, pages.events as usize, 0, 0));
    if pages.events != pg_total {
        problems.push(format!("site_daily_pages: {} events, postgresql counts {pg_total}", pages.events));
    }
    let countries = o.site_countries;
    rows.push(("site_daily_countries".to_owned(), countries as usize, countries as usize, 0, 0));
    if countries != pg_total {
        problems.push(format!("site_daily_countries: {countries} events, postgresql counts {pg_total}"));
    }
    let page_views = o.pg_counts.get(PAGE_VIEW).copied().unwrap_or(0);
    if pages.views != page_views {
        problems
            .push(format!("site_daily_pages: {} views, postgresql counts {page_views} page_view events", pages.views));
    }

    let lake_types = o.lake.per_type();
    let dynamo_types = o.dynamo.per_type();
    let mut acked_types: BTreeMap<String, i64> = BTreeMap::new();
    let mut erased_types: BTreeMap<String, i64> = BTreeMap::new();
    for (id, t) in &o.acks {
        *acked_types.entry(t.clone()).or_default() += 1;
        if erased.contains(id) {
            *erased_types.entry(t.clone()).or_default() += 1;
        }
    }
    let mut types: Vec<&String> = lake_types
        .keys()
        .chain(dynamo_types.keys())
        .chain(o.pg_counts.keys())
        .chain(o.site_hourly.keys())
        .chain(acked_types.keys())
        .collect();
    types.sort();
    types.dedup();
    let mut per_type = String::new();
    let _ = writeln!(
        per_type,
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "event_type", "acked", "lake", "dynamodb", "postgres", "site_hourly"
    );
    for t in types {
        let get = |m: &BTreeMap<String, i64>| m.get(t).copied().unwrap_or(0);
        let (a, l, d, p) = (get(&acked_types), get(&lake_types), get(&dynamo_types), get(&o.pg_counts));
        let (h, e) = (get(&o.site_hourly), get(&erased_types));
        let mark = if l == d && d + e == p && p == h && a <= l + e { "" } else { "  <-- mismatch" };
        if !mark.is_empty() {
            problems.push(format!("{t}: acked {a}, lake {l}, dynamodb {d}, postgres {p}, site_hourly {h}, erased {e}"));
        }
        let _ = writeln!(per_type, "{t:<20} {a:>10} {l:>10} {d:>10} {p:>10} {h:>11}{mark}");
    }

    let mut table = String::new();
    let _ =
        writeln!(table, "{:<20} {:>10} {:>10} {:>14} {:>10}", "store", "rows", "distinct", "acked missing", "repeated");
    for (name, total, distinct, missing, dup) in rows {
        let _ = writeln!(table, "{name:<20} {total:>10} {distinct:>10} {missing:>14} {dup:>10}");
    }
    let quarantined: u64 = o.quarantined.values().sum();
    let reasons: Vec<String> = o.quarantined.iter().map(|(r, n)| format!("{r}={n}")).collect();
    let _ = writeln!(table, "{:<20} {:>10}   {}", "quarantined", quarantined, reasons.join(" "));
    if !erased.is_empty() {
        let _ = writeln!(
            table,
            "{:<20} {:>10}   (gone from the lake and DynamoDB, counted in PostgreSQL)",
            "forgotten",
            erased.len()
        );
    }
    table.push('\n');
    table.push_str(&per_type);
    Report { ok: problems.is_empty(), problems, table }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn observed() -> Observed {
        let mut o = Observed {
            acks: Acks::new(),
            stream: StoreView::new("kinesis stream"),
            lake: StoreView::new("parquet lake"),
            dynamo: StoreView::new("dynamodb"),
            pg_counts: BTreeMap::new(),
            site_hourly: BTreeMap::new(),
            site_pages: SitePages::default(),
            site_countries: 0,
            quarantined: BTreeMap::new(),
            erased: HashSet::new(),
        };
        for n in 1..=3 {
            o.acks.insert(id(n), "a".into());
            o.stream.add(id(n), "a");
            o.lake.add(id(n), "a");
            o.dynamo.add(id(n), "a");
        }
        o.stream.add(id(1), "a"); // a client retry that landed twice on the stream is fine
        o.pg_counts.insert("a".into(), 3);
        o.site_hourly.insert("a".into(), 3);
        o.site_pages = SitePages { events: 3, views: 0 };
        o.site_countries = 3;
        o
    }

    #[test]
    fn exact_stores_pass() {
        let r = reconcile(&observed());
        assert!(r.ok, "{:?}\n{}", r.problems, r.table);
    }

    #[test]
    fn a_lost_event_fails() {
        let mut o = observed();
        o.dynamo.events.remove(&id(2));
        let r = reconcile(&o);
        assert!(!r.ok);
        assert!(r.problems.iter().any(|p| p.contains("dynamodb: 1 acknowledged events missing")), "{:?}", r.problems);
    }

    #[test]
    fn a_double_count_fails() {
        let mut o = observed();
        o.lake.add(id(3), "a");
        assert!(reconcile(&o).problems.iter().any(|p| p.contains("parquet lake: 1 events stored more than once")));
        let mut o = observed();
        o.pg_counts.insert("a".into(), 4);
        assert!(!reconcile(&o).ok);
    }

    /// The per-site tables must hold each counted event once too.
    #[test]
    fn site_tables_must_match_the_counts() {
        let mut o = observed();
        o.site_hourly.insert("a".into(), 2);
        let r = reconcile(&o);
        assert!(r.problems.iter().any(|p| p.contains("site_hourly 2")), "{:?}", r.problems);
        let mut o = observed();
        o.site_pages.events = 4;
        assert!(reconcile(&o).problems.iter().any(|p| p.contains("site_daily_pages: 4 events")));
        let mut o = observed();
        o.site_pages.views = 1;
        assert!(reconcile(&o).problems.iter().any(|p| p.contains("site_daily_pages: 1 views")));
        let mut o = observed();
        o.site_countries = 2;
        assert!(reconcile(&o).problems.iter().any(|p| p.contains("site_daily_countries: 2 events")));
    }

    /// Erased events must be gone from the lake and DynamoDB and still counted in PostgreSQL.
    #[test]
    fn erased_events_are_gone_from_the_lake_and_dynamodb_only() {
        let mut o = observed();
        o.erased.insert(id(2));
        o.lake.events.remove(&id(2));
        o.dynamo.events.remove(&id(2));
        let r = reconcile(&o);
        assert!(r.ok, "{:?}\n{}", r.problems, r.table);
        assert!(r.table.contains("forgotten"), "{}", r.table);
        // Still in DynamoDB: a failed erasure.
        let mut o = observed();
        o.erased.insert(id(2));
        o.lake.events.remove(&id(2));
        let r = reconcile(&o);
        assert!(r.problems.iter().any(|p| p.contains("dynamodb: 1 forgotten events still stored")), "{:?}", r.problems);
        // An erased event must not be subtracted from PostgreSQL's counts.
        let mut o = observed();
        o.erased.insert(id(2));
        o.lake.events.remove(&id(2));
        o.dynamo.events.remove(&id(2));
        o.pg_counts.insert("a".into(), 2);
        o.site_hourly.insert("a".into(), 2);
        assert!(!reconcile(&o).ok);
    }
}
