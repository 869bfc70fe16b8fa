//! The Athena example queries (athena/queries/*.sql) checked by a real SQL engine: a known event
//! set goes through the pipeline into the local stack, the lake is copied to a temporary
//! directory with the bucket's key layout, and athena/run_queries.py runs every query with
//! DuckDB and compares its answers with the ones computed here from what was sent.

#[path = "../../stream-consumer/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use lake_tools::compact::Compactor;
use lake_tools::compact::plan::Limits;
use lake_tools::compact::store::LakeFiles;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::lake::Partition;
use schemas::{EnrichedEvent, ServerFacts, encode_record, validate_event};
use serde_json::{Value, json};
use service_kit::postgres::Database;
use stream_consumer::decode::InputRecord;
use stream_consumer::enrich::parse_agent;
use support::TestEnv;
use uuid::Uuid;

const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const PATHS: [&str; 6] = ["/", "/products/espresso", "/products/grinder", "/cart", "/checkout", "/blog/how-to-brew"];
const SHARDS: [&str; 2] = ["shardId-000000000000", "shardId-000000000001"];
/// The sites events are admitted for; one event in ten has none (recorded before sites).
const SITES: [&str; 2] = ["shop-a", "shop-b"];

/// The receive hours of the event set: two days, so per-day and per-hour answers differ.
fn hours() -> [DateTime<Utc>; 4] {
    ["2024-05-01T22:00:00Z", "2024-05-01T23:00:00Z", "2024-05-02T00:00:00Z", "2024-05-02T01:00:00Z"]
        .map(|s| s.parse().unwrap())
}

/// A deterministic, varied event set: several types, anonymous IDs (some missing), signed-in
/// users (a user's events carry different anonymous IDs, as on several devices), two sites and
/// events without one, URLs with query strings, a bot user agent, late and early `occurred_at`.
fn events(n: usize) -> Vec<EnrichedEvent<'static>> {
    let mut rng = fastrand::Rng::with_seed(20240501);
    (0..n)
        .map(|i| {
            let received = hours()[i % 4] + Duration::milliseconds(rng.i64(0..3_599_000));
            let event_type = match rng.u32(0..100) {
                0..50 => "page_view",
                50..70 => "click",
                70..85 => "add_to_cart",
                85..95 => "purchase",
                _ => "signup",
            };
            let delay_ms = match rng.u32(0..100) {
                0..85 => rng.i64(200..30_000),
                85..92 => rng.i64(120_000..3_000_000),
                92..97 => rng.i64(7_200_000..21_600_000),
                97..99 => rng.i64(100_000_000..110_000_000),
                _ => -rng.i64(60_000..300_000),
            };
            let mut raw = json!({
                "event_id": Uuid::from_u128(rng.u128(..)).to_string(),
                "event_type": event_type,
                "occurred_at": (received - Duration::milliseconds(delay_ms)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "session_id": format!("sess-{}", rng.u32(0..200)),
                "properties": {"i": i},
            });
            if rng.u32(0..100) >= 5 {
                raw["anonymous_id"] = json!(format!("anon-{}", rng.u32(0..40)));
            }
            if rng.u32(0..100) < 25 {
                raw["user_id"] = json!(format!("user-{}", rng.u32(0..12)));
            }
            if event_type != "signup" {
                let query = if rng.bool() { "?utm_source=newsletter&utm_medium=email" } else { "" };
                raw["url"] = json!(format!("https://shop.example.com{}{query}", PATHS[rng.usize(0..PATHS.len())]));
            }
            let agent = match rng.u32(0..100) {
                0..80 => CHROME,
                80..90 => IPHONE,
                _ => GOOGLEBOT,
            };
            let site = match rng.u32(0..10) {
                0 => None,
                n => Some(SITES[n as usize % 2]),
            };
            let mut event = validate_event(&raw, received).expect("generated event is valid").enrich(&ServerFacts {
                received_at: received,
                client_ip: Some("198.51.100.23".parse().unwrap()),
                user_agent: Some(agent.into()),
            });
            event.site = site.map(Into::into);
            event
        })
        .collect()
}

fn record(shard: &str, seq: usize, data: Vec<u8>) -> InputRecord {
    InputRecord {
        shard_id: shard.into(),
        sequence_number: stream_consumer::testing::seq(seq),
        approximate_arrival: Utc::now(),
        data: Bytes::from(data),
    }
}

/// Batches of the events, alternating shards, with poison records and client re-sends mixed in.
/// Returns the batches and the (reason code, shard) of each poison record.
fn batches(events: &[EnrichedEvent<'_>]) -> (Vec<Vec<InputRecord>>, Vec<(&'static str, &'static str)>) {
    let poison: [(&[u8], &str); 4] = [
        (b"not json at all", "not_json"),
        (br#"{"v": 9, "event": {}}"#, "unknown_version"),
        (&[0xc3, 0x28], "invalid_utf8"),
        (b"{broken", "not_json"),
    ];
    let mut out = Vec::new();
    let mut quarantined = Vec::new();
    let mut next_seq = [1usize, 1];
    for (b, chunk) in events.chunks(40).enumerate() {
        let s = b % 2;
        let mut data: Vec<Vec<u8>> = chunk.iter().map(encode_record).collect();
        if let Some((bytes, code)) = poison.get(b) {
            data.insert(data.len() / 2, bytes.to_vec());
            quarantined.push((*code, SHARDS[s]));
        }
        // A client re-sending two events of an earlier batch: the pipeline must drop them.
        if b >= 2 {
            data.push(encode_record(&events[(b - 2) * 40]));
            data.push(encode_record(&events[(b - 2) * 40 + 1]));
        }
        let batch = data
            .into_iter()
            .map(|d| {
                next_seq[s] += 1;
                record(SHARDS[s], next_seq[s], d)
            })
            .collect();
        out.push(batch);
    }
    (out, quarantined)
}

fn dt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Trino's url_extract_path for the URLs generated here.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let path = &rest[path_start..];
    path[..path.find(['?', '#']).unwrap_or(path.len())].to_owned()
}

/// The answer every query must give, computed from the events sent (each once).
#[allow(clippy::too_many_lines, reason = "test code: one expected answer per example query, side by side")]
fn expected(events: &[EnrichedEvent<'_>], quarantined: &[(&str, &str)], dead_letter_days: (String, String)) -> Value {
    let days = json!([dt(hours()[0]), dt(hours()[3])]);
    let is_bot = |e: &EnrichedEvent<'_>| e.user_agent.as_deref().is_some_and(|ua| parse_agent(ua).is_bot);
    let mut out = serde_json::Map::new();
    let mut entry = |name: &str, params: Value, columns: &[&str], rows: Vec<Value>| {
        out.insert(name.into(), json!({"params": params, "columns": columns, "rows": rows}));
    };

    let mut by_hour: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let mut by_day: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bots: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in events {
        let (d, h) = (dt(e.received_at), e.received_at.format("%H").to_string());
        *by_hour.entry((d.clone(), h, e.event_type.to_string())).or_default() += 1;
        *by_day.entry((d.clone(), e.event_type.to_string())).or_default() += 1;
        let day_users = users.entry(d.clone()).or_default();
        day_users.extend(e.anonymous_id.as_deref().map(str::to_owned));
        let b = bots.entry(d).or_default();
        b.0 += 1;
        b.1 += i64::from(is_bot(e));
    }
    entry(
        "01_events_by_type_hour",
        days.clone(),
        &["dt", "hour", "event_type", "events"],
        by_hour.into_iter().map(|((d, h, t), n)| json!([d, h, t, n])).collect(),
    );
    entry(
        "02_events_by_type_day",
        days.clone(),
        &["dt", "event_type", "events"],
        by_day.into_iter().map(|((d, t), n)| json!([d, t, n])).collect(),
    );
    entry(
        "03_unique_users_by_day",
        days.clone(),
        &["dt", "anonymous_users"],
        users.into_iter().map(|(d, u)| json!([d, u.len()])).collect(),
    );

    let mut pages: HashMap<String, (i64, BTreeSet<String>)> = HashMap::new();
    for e in events.iter().filter(|e| e.event_type == "page_view") {
        if let Some(url) = &e.url {
            let p = pages.entry(url_path(url)).or_default();
            p.0 += 1;
            p.1.extend(e.anonymous_id.as_deref().map(str::to_owned));
        }
    }
    let mut pages: Vec<(String, i64, usize)> = pages.into_iter().map(|(p, (v, u))| (p, v, u.len())).collect();
    pages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    pages.truncate(10);
    entry(
        "04_top_pages",
        days.clone(),
        &["path", "views", "visitors"],
        pages.into_iter().map(|(p, v, u)| json!([p, v, u])).collect(),
    );

    // anonymous_id -> (first page view, last purchase)
    type Steps = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let mut funnel: HashMap<&str, Steps> = HashMap::new();
    for e in events {
        let Some(anon) = e.anonymous_id.as_deref() else { continue };
        let f = funnel.entry(anon).or_default();
        match &*e.event_type {
            "page_view" => f.0 = Some(f.0.map_or(e.occurred_at, |t| t.min(e.occurred_at))),
            "purchase" => f.1 = Some(f.1.map_or(e.occurred_at, |t| t.max(e.occurred_at))),
            _ => {}
        }
    }
    let viewers = funnel.values().filter(|f| f.0.is_some()).count();
    let converted = funnel.values().filter(|f| matches!(f, (Some(v), Some(p)) if p >= v)).count();
    let conversion = (viewers > 0).then(|| round4(converted as f64 / viewers as f64));
    entry(
        "05_funnel_page_view_to_purchase",
        days.clone(),
        &["viewers", "purchased_after_view", "conversion"],
        vec![json!([viewers, converted, conversion])],
    );
    entry(
        "06_bot_share",
        days.clone(),
        &["dt", "events", "bot_events", "bot_share"],
        bots.into_iter().map(|(d, (n, b))| json!([d, n, b, round4(b as f64 / n as f64)])).collect(),
    );

    let mut late: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for e in events {
        let delay = (e.received_at - e.occurred_at).num_milliseconds();
        let bucket = match delay {
            d if d < 0 => "0 client clock ahead",
            d if d < 60_000 => "1 under a minute",
            d if d < 3_600_000 => "2 under an hour",
            d if d < 86_400_000 => "3 under a day",
            _ => "4 a day or more",
        };
        let l = late.entry(bucket).or_insert((0, i64::MIN));
        l.0 += 1;
        l.1 = l.1.max(delay);
    }
    entry(
        "07_late_events",
        days.clone(),
        &["lateness", "events", "max_delay_seconds"],
        late.into_iter().map(|(b, (n, max))| json!([b, n, max as f64 / 1000.0])).collect(),
    );

    let mut dead: BTreeMap<&str, (i64, BTreeSet<&str>)> = BTreeMap::new();
    for (code, shard) in quarantined {
        let d = dead.entry(code).or_default();
        d.0 += 1;
        d.1.insert(shard);
    }
    let mut dead: Vec<(&str, i64, usize)> = dead.into_iter().map(|(c, (n, s))| (c, n, s.len())).collect();
    dead.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    entry(
        "08_dead_letter_reasons",
        json!([dead_letter_days.0, dead_letter_days.1]),
        &["reason_code", "records", "shards"],
        dead.into_iter().map(|(c, n, s)| json!([c, n, s])).collect(),
    );

    // A visitor is user_id when the event has one, else anonymous_id; no site, no row.
    let visitor = |e: &EnrichedEvent<'_>| e.user_id.as_deref().or(e.anonymous_id.as_deref()).map(str::to_owned);
    let mut site_days: BTreeMap<(String, String), (i64, BTreeSet<String>)> = BTreeMap::new();
    let mut site_pages: BTreeMap<String, HashMap<String, (i64, BTreeSet<String>)>> = BTreeMap::new();
    for e in events {
        let Some(site) = e.site.as_deref() else { continue };
        let day = site_days.entry((site.to_owned(), dt(e.received_at))).or_default();
        day.0 += 1;
        day.1.extend(visitor(e));
        if e.event_type == "page_view"
            && let Some(url) = &e.url
        {
            let page = site_pages.entry(site.to_owned()).or_default().entry(url_path(url)).or_default();
            page.0 += 1;
            page.1.extend(visitor(e));
        }
    }
    assert_eq!(site_days.keys().map(|k| &k.0).collect::<BTreeSet<_>>().len(), 2, "both sites have events");
    // The set must tell the visitor rule from counting anonymous IDs alone, or 09 and 10 would
    // pass with either.
    let anonymous_only = |site: &str, day: &str| {
        let ids = events.iter().filter(|e| e.site.as_deref() == Some(site) && dt(e.received_at) == day);
        ids.filter_map(|e| e.anonymous_id.as_deref()).collect::<BTreeSet<_>>().len()
    };
    assert!(
        site_days.iter().any(|((s, d), (_, v))| v.len() != anonymous_only(s, d)),
        "user_id changes some site's visitor count"
    );
    entry(
        "09_site_visitors_by_day",
        days.clone(),
        &["site", "dt", "events", "visitors"],
        site_days.into_iter().map(|((s, d), (n, v))| json!([s, d, n, v.len()])).collect(),
    );
    let mut top = Vec::new();
    for (site, pages) in site_pages {
        let mut pages: Vec<(String, i64, usize)> = pages.into_iter().map(|(p, (n, v))| (p, n, v.len())).collect();
        pages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        pages.truncate(5);
        top.extend(pages.into_iter().map(|(p, n, v)| json!([site, p, n, v])));
    }
    entry("10_site_top_pages", days, &["site", "path", "views", "visitors"], top);
    Value::Object(out)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Copies every object of the bucket into `dir`, keeping the key layout.
async fn download(env: &TestEnv, dir: &Path, filter: impl Fn(&str) -> bool) {
    for key in env.keys("").await {
        if filter(&key) {
            let path = dir.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, env.object(&key).await).unwrap();
        }
    }
}

/// Runs athena/run_queries.py; returns (success, output).
fn run_queries(lake: &Path, expected: &Value) -> (bool, String) {
    let python = repo_root().join(".local/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/venv.sh` (DuckDB comes from scripts/requirements/lake.txt)",
        python.display()
    );
    let file = lake.join("expected.json");
    std::fs::write(&file, serde_json::to_vec_pretty(expected).unwrap()).unwrap();
    let out = Command::new(python)
        .arg(repo_root().join("athena/run_queries.py"))
        .arg("--lake")
        .arg(lake)
        .arg("--expected")
        .arg(&file)
        .output()
        .expect("run athena/run_queries.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("run_queries.py --lake {}:\n{text}", lake.display());
    (out.status.success(), text)
}

fn parquet_rows(dir: &Path) -> i64 {
    let mut rows = 0;
    for day in std::fs::read_dir(dir.join("events")).unwrap() {
        for hour in std::fs::read_dir(day.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(hour.unwrap().path()).unwrap() {
                let body = Bytes::from(std::fs::read(file.unwrap().path()).unwrap());
                rows += ParquetRecordBatchReaderBuilder::try_new(body).unwrap().metadata().file_metadata().num_rows();
            }
        }
    }
    rows
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("athena-{tag}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Invariant: every example query answers what the run sent — on the micro-batch lake, on the
/// compacted lake, and on the swap window where both copies of an hour are visible at once —
/// and the check fails when an answer is wrong.
#[tokio::test]
async fn example_queries_answer_what_the_pipeline_was_sent() {
    let env = TestEnv::new().await;
    let events = events(480);
    let (batches, quarantined) = batches(&events);
    let day_before = dt(Utc::now());
    let pipeline = env.pipeline();
    for b in &batches {
        pipeline.process(b).await.unwrap();
    }
    // An identical redelivery of one batch changes no answer. (Not a batch with a poison record:
    // its dead-letter object is keyed by processing hour and would double if the hour turned.)
    pipeline.process(&batches[5]).await.unwrap();
    let expected = expected(&events, &quarantined, (day_before, dt(Utc::now())));

    let micro = TempDir::new("micro");
    download(&env, &micro.0, |_| true).await;
    assert_eq!(parquet_rows(&micro.0), 480, "the lake holds each event once");
    let (ok, out) = run_queries(&micro.0, &expected);
    assert!(ok, "queries over the micro-batch lake:\n{out}");

    let compactor = Compactor::new(
        LakeFiles::new(env.s3.clone(), env.bucket.clone()),
        Database::from_pool(env.ledger.pool().clone()),
        Limits::default(),
    );
    for h in hours() {
        let report = compactor.compact_partition(&Partition::of(h)).await.unwrap();
        assert_eq!(report.files_after, 1, "{report:?}");
    }
    let compacted = TempDir::new("compacted");
    download(&env, &compacted.0, |_| true).await;
    let (ok, out) = run_queries(&compacted.0, &expected);
    assert!(ok, "queries over the compacted lake:\n{out}");

    // The swap window: a listing taken between writing an hour's compacted file and deleting
    // its inputs sees every row twice.
    let swap = TempDir::new("swap");
    download(&env, &swap.0, |_| true).await;
    download_dir(&micro.0, &swap.0);
    assert_eq!(parquet_rows(&swap.0), 960);
    let (ok, out) = run_queries(&swap.0, &expected);
    assert!(ok, "queries during the compaction swap:\n{out}");

    // A wrong expectation must fail the check.
    let mut wrong = expected.clone();
    let cell = &mut wrong["02_events_by_type_day"]["rows"][0][2];
    *cell = json!(cell.as_i64().unwrap() + 1);
    let (ok, out) = run_queries(&compacted.0, &wrong);
    assert!(!ok && out.contains("FAIL 02_events_by_type_day"), "a wrong answer passed:\n{out}");
}

/// Copies the event files of one local lake copy into another.
fn download_dir(from: &Path, to: &Path) {
    for day in std::fs::read_dir(from.join("events")).unwrap() {
        let day = day.unwrap();
        for hour in std::fs::read_dir(day.path()).unwrap() {
            let hour = hour.unwrap();
            let target = to.join("events").join(day.file_name()).join(hour.file_name());
            std::fs::create_dir_all(&target).unwrap();
            for file in std::fs::read_dir(hour.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
            }
        }
    }
}
