//! Pure aggregation: what each batch adds to PostgreSQL's counts — per site and event type, per
//! hour received, and per site with their visitors per hour, and per page and per country and
//! day occurred.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemas::EnrichedEvent;

const SECONDS_PER_HOUR: i64 = 3600;
const SECONDS_PER_DAY: i64 = 86_400;

/// The site of events recorded before sites existed (no `site` in the record): the aggregate
/// tables' key columns cannot be null, and migration 0004_site.sql gives the older rows this too.
pub const NO_SITE: &str = "";

/// `site_daily_pages.path` of events without a URL, so a day's pages still sum to its events.
pub const NO_PAGE: &str = "";

/// `site_daily_countries.country` of events without a country (the producer's lookup off, or an
/// address it does not know), so a day's countries still sum to its events.
pub const NO_COUNTRY: &str = "";

/// The event type whose events are page views (`site_daily_pages.views`).
pub const PAGE_VIEW: &str = "page_view";

/// A row of `event_type_counts`: (site, event type).
pub type TotalKey = (String, String);
/// A row of `event_type_hourly_counts` or `site_hourly`: (site, event type, hour).
pub type HourKey = (String, String, DateTime<Utc>);
/// A row of `site_daily_pages`: (site, day, path).
pub type PageKey = (String, NaiveDate, String);
/// A row of `site_daily_countries`: (site, day, country).
pub type CountryKey = (String, NaiveDate, String);
/// Events per visitor (`None`: events with neither `user_id` nor `anonymous_id`). Tallies per
/// visitor, unlike a distinct count, add up across batches exactly as PostgreSQL's sketches
/// union, so the in-memory ledger and tests can compare them.
pub type Visitors<T> = BTreeMap<Option<String>, T>;

/// What one page row adds: its events, and how many of them are page views.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageTally {
    pub events: i64,
    pub views: i64,
}

/// The facts of one event that the aggregates read.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    pub site: Option<&'a str>,
    pub event_type: &'a str,
    pub received_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    /// `user_id` when present, else `anonymous_id`: a signed-in visitor is one visitor on every
    /// device, while an anonymous one is as good as their cookie.
    pub visitor: Option<&'a str>,
    pub url: Option<&'a str>,
    /// The client address's country, as the producer looked it up.
    pub country: Option<&'a str>,
}

impl<'a> Fact<'a> {
    pub fn of(e: &'a EnrichedEvent<'_>) -> Self {
        Fact {
            site: e.site.as_deref(),
            event_type: &e.event_type,
            received_at: e.received_at,
            occurred_at: e.occurred_at,
            visitor: e.user_id.as_deref().or(e.anonymous_id.as_deref()),
            url: e.url.as_deref(),
            country: e.country.as_deref(),
        }
    }
}

/// The page of a URL: its path without query string or fragment ("/" for a bare origin). URLs
/// are not required to be absolute, so anything before `://` and up to the next `/` is the
/// origin and a URL without `://` is taken as a path. No percent-decoding or case folding:
/// the lake keeps the URL as sent, and Athena's top-pages query (`url_extract_path`) cuts it the
/// same way, except that it gives a bare origin the empty path where this gives "/".
pub fn page_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find(['/', '?', '#']).map_or("", |j| &after[j..])
        }
        None => url,
    };
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    if path.is_empty() { "/" } else { path }
}

/// Counts to add in PostgreSQL; sorted, so statements touch rows in a stable order (no deadlocks
/// between concurrent batches upserting the same keys).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub totals: BTreeMap<TotalKey, i64>,
    /// Per hour *received* (as the lake's partitions).
    pub hourly: BTreeMap<HourKey, i64>,
    /// Per hour the event *occurred*, with its visitors.
    pub site_hourly: BTreeMap<HourKey, Visitors<i64>>,
    /// Per UTC day the event occurred and page, with its visitors.
    pub daily_pages: BTreeMap<PageKey, Visitors<PageTally>>,
    /// Per UTC day the event occurred and client country, with its visitors.
    pub daily_countries: BTreeMap<CountryKey, Visitors<i64>>,
}

impl Counts {
    /// Aggregates a batch's facts. A batch holds a site or two, a handful of types, one or two
    /// hours and a few hundred visitors, so events are tallied under borrowed keys (times as
    /// numbers) and each distinct key becomes `String`s and a time once, not once per event.
    pub fn of<'a>(facts: impl Iterator<Item = Fact<'a>>) -> Counts {
        type Hour<'a> = (&'a str, &'a str, i64);
        let mut hourly: foldhash::HashMap<Hour<'a>, i64> = foldhash::HashMap::default();
        let mut site_hourly: foldhash::HashMap<(Hour<'a>, Option<&'a str>), i64> = foldhash::HashMap::default();
        let mut pages: foldhash::HashMap<(&'a str, i64, &'a str, Option<&'a str>), PageTally> =
            foldhash::HashMap::default();
        let mut countries: foldhash::HashMap<(&'a str, i64, &'a str, Option<&'a str>), i64> =
            foldhash::HashMap::default();
        for f in facts {
            let site = f.site.unwrap_or(NO_SITE);
            let occurred = f.occurred_at.timestamp();
            *hourly.entry((site, f.event_type, f.received_at.timestamp().div_euclid(SECONDS_PER_HOUR))).or_default() +=
                1;
            *site_hourly
                .entry(((site, f.event_type, occurred.div_euclid(SECONDS_PER_HOUR)), f.visitor))
                .or_default() += 1;
            let path = f.url.map_or(NO_PAGE, page_path);
            let page = pages.entry((site, occurred.div_euclid(SECONDS_PER_DAY), path, f.visitor)).or_default();
            page.events += 1;
            page.views += i64::from(f.event_type == PAGE_VIEW);
            let day = occurred.div_euclid(SECONDS_PER_DAY);
            *countries.entry((site, day, f.country.unwrap_or(NO_COUNTRY), f.visitor)).or_default() += 1;
        }
        let day = |d: i64| DateTime::from_timestamp(d * SECONDS_PER_DAY, 0).unwrap_or_default().date_naive();
        let hour = |h: i64| DateTime::from_timestamp(h * SECONDS_PER_HOUR, 0).unwrap_or_default();
        let owned = |v: Option<&str>| v.map(str::to_owned);
        let mut counts = Counts::default();
        for ((site, event_type, h), n) in hourly {
            *counts.totals.entry((site.to_owned(), event_type.to_owned())).or_default() += n;
            *counts.hourly.entry((site.to_owned(), event_type.to_owned(), hour(h))).or_default() += n;
        }
        for (((site, event_type, h), visitor), n) in site_hourly {
            let cell = counts.site_hourly.entry((site.to_owned(), event_type.to_owned(), hour(h))).or_default();
            *cell.entry(owned(visitor)).or_default() += n;
        }
        for ((site, d, path, visitor), tally) in pages {
            let cell = counts.daily_pages.entry((site.to_owned(), day(d), path.to_owned())).or_default();
            let t = cell.entry(owned(visitor)).or_default();
            t.events += tally.events;
            t.views += tally.views;
        }
        for ((site, d, country, visitor), n) in countries {
            let cell = counts.daily_countries.entry((site.to_owned(), day(d), country.to_owned())).or_default();
            *cell.entry(owned(visitor)).or_default() += n;
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Adds `other` into `self` (the in-memory ledger's upsert).
    pub fn add(&mut self, other: Counts) {
        for (key, n) in other.totals {
            *self.totals.entry(key).or_default() += n;
        }
        for (key, n) in other.hourly {
            *self.hourly.entry(key).or_default() += n;
        }
        for (key, visitors) in other.site_hourly {
            let cell = self.site_hourly.entry(key).or_default();
            for (visitor, n) in visitors {
                *cell.entry(visitor).or_default() += n;
            }
        }
        for (key, visitors) in other.daily_pages {
            let cell = self.daily_pages.entry(key).or_default();
            for (visitor, t) in visitors {
                let sum = cell.entry(visitor).or_default();
                sum.events += t.events;
                sum.views += t.views;
            }
        }
        for (key, visitors) in other.daily_countries {
            let cell = self.daily_countries.entry(key).or_default();
            for (visitor, n) in visitors {
                *cell.entry(visitor).or_default() += n;
            }
        }
    }

    /// Column arrays for the single `UNNEST` upsert. The site tables get one row per key and
    /// visitor; PostgreSQL groups them by key, sums the events and folds the visitors into a
    /// sketch (`hll_add_agg`), so the sketch format stays the extension's business.
    pub fn as_columns(&self) -> UpsertColumns {
        let mut c = UpsertColumns {
            total_sites: self.totals.keys().map(|(s, _)| s.clone()).collect(),
            total_types: self.totals.keys().map(|(_, t)| t.clone()).collect(),
            total_counts: self.totals.values().copied().collect(),
            hourly_sites: self.hourly.keys().map(|(s, ..)| s.clone()).collect(),
            hourly_types: self.hourly.keys().map(|(_, t, _)| t.clone()).collect(),
            hourly_hours: self.hourly.keys().map(|(.., h)| *h).collect(),
            hourly_counts: self.hourly.values().copied().collect(),
            ..UpsertColumns::default()
        };
        for ((site, event_type, hour), visitors) in &self.site_hourly {
            for (visitor, n) in visitors {
                c.site_hourly_sites.push(site.clone());
                c.site_hourly_types.push(event_type.clone());
                c.site_hourly_hours.push(*hour);
                c.site_hourly_visitors.push(visitor.clone());
                c.site_hourly_events.push(*n);
            }
        }
        for ((site, day, path), visitors) in &self.daily_pages {
            for (visitor, t) in visitors {
                c.page_sites.push(site.clone());
                c.page_days.push(*day);
                c.page_paths.push(path.clone());
                c.page_visitors.push(visitor.clone());
                c.page_events.push(t.events);
                c.page_views.push(t.views);
            }
        }
        for ((site, day, country), visitors) in &self.daily_countries {
            for (visitor, n) in visitors {
                c.country_sites.push(site.clone());
                c.country_days.push(*day);
                c.country_codes.push(country.clone());
                c.country_visitors.push(visitor.clone());
                c.country_events.push(*n);
            }
        }
        c
    }
}

/// The parameters of the counts upsert, as parallel arrays.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpsertColumns {
    pub total_sites: Vec<String>,
    pub total_types: Vec<String>,
    pub total_counts: Vec<i64>,
    pub hourly_sites: Vec<String>,
    pub hourly_types: Vec<String>,
    pub hourly_hours: Vec<DateTime<Utc>>,
    pub hourly_counts: Vec<i64>,
    pub site_hourly_sites: Vec<String>,
    pub site_hourly_types: Vec<String>,
    pub site_hourly_hours: Vec<DateTime<Utc>>,
    pub site_hourly_visitors: Vec<Option<String>>,
    pub site_hourly_events: Vec<i64>,
    pub page_sites: Vec<String>,
    pub page_days: Vec<NaiveDate>,
    pub page_paths: Vec<String>,
    pub page_visitors: Vec<Option<String>>,
    pub page_events: Vec<i64>,
    pub page_views: Vec<i64>,
    pub country_sites: Vec<String>,
    pub country_days: Vec<NaiveDate>,
    pub country_codes: Vec<String>,
    pub country_visitors: Vec<Option<String>>,
    pub country_events: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// An event received when it occurred, without visitor or URL.
    fn fact<'a>(site: Option<&'a str>, event_type: &'a str, at: DateTime<Utc>) -> Fact<'a> {
        Fact { site, event_type, received_at: at, occurred_at: at, visitor: None, url: None, country: None }
    }

    #[test]
    fn counts_per_type_and_hour_as_columns() {
        let events = [
            ("page_view", t("2024-05-01T10:59:59Z")),
            ("click", t("2024-05-01T10:00:00Z")),
            ("page_view", t("2024-05-01T11:00:00Z")),
            ("page_view", t("2024-05-01T11:30:00Z")),
        ];
        let cols = Counts::of(events.iter().map(|(e, at)| fact(Some("s"), e, *at))).as_columns();
        assert_eq!(cols.total_sites, ["s", "s"]);
        assert_eq!(cols.total_types, ["click", "page_view"]);
        assert_eq!(cols.total_counts, [1, 3]);
        assert_eq!(cols.hourly_types, ["click", "page_view", "page_view"]);
        assert_eq!(
            cols.hourly_hours,
            [t("2024-05-01T10:00:00Z"), t("2024-05-01T10:00:00Z"), t("2024-05-01T11:00:00Z")]
        );
        assert_eq!(cols.hourly_counts, [1, 1, 2]);
    }

    /// Invariant: counts are kept apart per site, and events without one (recorded before sites)
    /// count under [`NO_SITE`].
    #[test]
    fn counts_per_site() {
        let at = t("2024-05-01T10:00:00Z");
        let counts = Counts::of(
            [
                fact(Some("b"), "click", at),
                fact(None, "click", at),
                fact(Some("a"), "click", at),
                fact(Some("a"), "click", at),
            ]
            .into_iter(),
        );
        let totals: Vec<(&str, &str, i64)> =
            counts.totals.iter().map(|((s, e), n)| (s.as_str(), e.as_str(), *n)).collect();
        assert_eq!(totals, [("", "click", 1), ("a", "click", 2), ("b", "click", 1)]);
        assert_eq!(counts.hourly.len(), 3);
    }

    /// Invariant: an event is counted in the hour of its lake partition (the hours agree with
    /// `Partition::hour_start`, before 1970 too).
    #[test]
    fn hours_are_the_lake_partitions_hours() {
        for at in ["2024-05-01T10:59:59.999Z", "2024-05-01T11:00:00Z", "1969-12-31T23:59:59.5Z", "1960-03-01T00:00:00Z"]
        {
            let counts = Counts::of([fact(None, "a", t(at))].into_iter());
            let hour = counts.hourly.keys().next().unwrap().2;
            assert_eq!(hour, schemas::lake::Partition::of(t(at)).hour_start(), "{at}");
        }
    }

    /// Invariant: the site tables key by when the event occurred, the type counts by when it was
    /// received; the day and hour agree across midnight.
    #[test]
    fn site_tables_use_the_time_it_occurred() {
        let f = Fact {
            occurred_at: t("2024-04-30T23:59:00Z"),
            received_at: t("2024-05-01T00:01:00Z"),
            visitor: Some("v"),
            url: Some("https://a.example/x"),
            ..fact(Some("s"), PAGE_VIEW, t("2024-05-01T00:01:00Z"))
        };
        let counts = Counts::of([f].into_iter());
        assert_eq!(counts.hourly.keys().next().unwrap().2, t("2024-05-01T00:00:00Z"));
        assert_eq!(counts.site_hourly.keys().next().unwrap().2, t("2024-04-30T23:00:00Z"));
        let page = counts.daily_pages.keys().next().unwrap();
        assert_eq!((page.1.to_string(), page.2.as_str()), ("2024-04-30".into(), "/x"));
    }

    /// Invariant: visitors are tallied per visitor (a repeat visitor is one key), events without
    /// one are tallied under `None`, views count only page views, and a missing URL is `NO_PAGE`.
    #[test]
    fn visitors_pages_and_views() {
        let at = t("2024-05-01T10:00:00Z");
        let with = |visitor, event_type, url| Fact { visitor, url, ..fact(Some("s"), event_type, at) };
        let counts = Counts::of(
            [
                with(Some("u1"), PAGE_VIEW, Some("https://a.example/p?q=1")),
                with(Some("u1"), PAGE_VIEW, Some("https://a.example/p#top")),
                with(Some("u2"), "click", Some("https://a.example/p")),
                with(None, PAGE_VIEW, Some("https://a.example/p")),
                with(Some("u2"), "click", None),
            ]
            .into_iter(),
        );
        let (_, pv) = counts.site_hourly.iter().find(|((_, e, _), _)| e == PAGE_VIEW).unwrap();
        assert_eq!(pv, &Visitors::from([(None, 1), (Some("u1".into()), 2)]));
        let day = at.date_naive();
        let p = &counts.daily_pages[&("s".into(), day, "/p".into())];
        assert_eq!(p[&Some("u1".into())], PageTally { events: 2, views: 2 });
        assert_eq!(p[&Some("u2".into())], PageTally { events: 1, views: 0 });
        assert_eq!(p[&None], PageTally { events: 1, views: 1 });
        assert_eq!(counts.daily_pages[&("s".into(), day, NO_PAGE.into())][&Some("u2".into())].events, 1);
        let cols = counts.as_columns();
        assert_eq!(cols.page_events.iter().sum::<i64>(), 5, "a day's pages sum to its events");
        assert_eq!(cols.site_hourly_events.iter().sum::<i64>(), 5);
        assert_eq!(cols.page_views.iter().sum::<i64>(), 3);
    }

    /// Invariant: adding two batches' counts equals counting both batches at once.
    #[test]
    fn adding_counts_is_counting_together() {
        let at = t("2024-05-01T10:00:00Z");
        let facts: Vec<Fact<'_>> = (0..40)
            .map(|i| Fact {
                visitor: [Some("a"), Some("b"), None][i % 3],
                url: [Some("/x"), None][i % 2],
                country: [Some("DE"), None, Some("FR"), Some("DE")][i % 4],
                ..fact(
                    Some(["s", "t"][i % 2]),
                    ["page_view", "click"][i % 2],
                    at + chrono::Duration::minutes(i as i64 * 7),
                )
            })
            .collect();
        let mut sum = Counts::of(facts[..13].iter().copied());
        sum.add(Counts::of(facts[13..].iter().copied()));
        assert_eq!(sum, Counts::of(facts.iter().copied()));
    }

    /// Invariant: events count per site, day occurred and country, with their visitors; events
    /// without a country count under [`NO_COUNTRY`], so a day's countries sum to its events.
    #[test]
    fn countries_per_day_with_visitors() {
        let at = t("2024-05-01T23:30:00Z");
        let from = |country, visitor, at| Fact { country, visitor, ..fact(Some("s"), "click", at) };
        let counts = Counts::of(
            [
                from(Some("DE"), Some("u1"), at),
                from(Some("DE"), Some("u1"), at),
                from(Some("DE"), Some("u2"), at),
                from(Some("FR"), None, at),
                from(None, Some("u3"), at),
                // Past midnight: the next day's row.
                from(Some("DE"), Some("u1"), at + chrono::Duration::hours(1)),
            ]
            .into_iter(),
        );
        let day = at.date_naive();
        let next = day.succ_opt().unwrap();
        let key = |d, c: &str| ("s".to_owned(), d, c.to_owned());
        assert_eq!(
            counts.daily_countries[&key(day, "DE")],
            Visitors::from([(Some("u1".into()), 2), (Some("u2".into()), 1)])
        );
        assert_eq!(counts.daily_countries[&key(day, "FR")], Visitors::from([(None, 1)]));
        assert_eq!(counts.daily_countries[&key(day, NO_COUNTRY)], Visitors::from([(Some("u3".into()), 1)]));
        assert_eq!(counts.daily_countries[&key(next, "DE")], Visitors::from([(Some("u1".into()), 1)]));
        let cols = counts.as_columns();
        assert_eq!(cols.country_events.iter().sum::<i64>(), 6, "a day's countries sum to its events");
        assert_eq!(cols.country_codes, ["", "DE", "DE", "FR", "DE"]);
        assert_eq!(cols.country_days.len(), cols.country_visitors.len());
    }

    #[test]
    fn page_paths() {
        for (url, path) in [
            ("https://a.example/p/q?x=1#y", "/p/q"),
            ("https://a.example", "/"),
            ("https://a.example?x=1", "/"),
            ("https://a.example#frag", "/"),
            ("http://user@a.example:8080/Caf%C3%A9/", "/Caf%C3%A9/"),
            ("/relative/only?x", "/relative/only"),
            ("?only=query", "/"),
            ("app://screen/home", "/home"),
        ] {
            assert_eq!(page_path(url), path, "{url}");
        }
    }
}
