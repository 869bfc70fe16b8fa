//! Generated API tests: schemathesis sends several thousand requests built from
//! producer-api/openapi.yaml to the real producer binary on a fresh kinesalite stream, with every
//! check on (no 5xx, status codes, content types and bodies as documented, schema-valid requests
//! accepted, schema-violating ones refused). Then the stream must hold exactly the events the API
//! acknowledged, and the producer's log must not hold the client's address.
//!
//! Needs the local stack (`make test`) and schemathesis in .local/venv (`bash scripts/venv.sh`,
//! from scripts/requirements/apitest.txt). The designed exceptions schemathesis cannot know about
//! (a batch is checked event by event; a few limits OpenAPI 3.0 cannot state) are taught to it,
//! narrowly, in tests/api_fuzz/hooks.py.

#[path = "support/kinesis.rs"]
mod kinesis;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Per operation and phase. The coverage phase alone sends ~2,700 requests (every boundary of
/// every keyword); 100 fuzzed examples on top keep a run near a minute on two cores.
const MAX_EXAMPLES: &str = "100";
/// A run that has not finished by then is killed and fails: a hung server must not hang `make test`.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Fewer requests than this means schemathesis skipped work it should have done.
const MIN_REQUESTS: usize = 2000;
/// The site the server knows: its key is sent on every request (the `X-Site-Key` security
/// scheme), and its origin is allowed, so the CORS layer is under test too.
const SITES: &str = r#"{"sites": [{"id": "fuzz", "key": "pk_fuzz", "allowed_origins": ["https://shop.example"],
    "events_per_second": 1000000, "burst": 1000000, "per_ip_events_per_second": 1000000, "per_ip_burst": 1000000}]}"#;

/// Kills the producer when the test ends, whichever way it ends.
struct Producer(Child);

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("producer-api is inside the repository").to_owned()
}

/// A port nothing listens on right now (the OS picks it; the listener is closed before the
/// producer binds it, a window other tests' ephemeral ports are unlikely to hit).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.starts_with("HTTP/1.1 200")
}

/// The last `max` bytes of a file, for failure messages that must fit in a terminal.
fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// Standard base64 with padding, as schemathesis writes response bodies in its NDJSON report.
/// Written out here because the package has no base64 dependency and needs none outside tests.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.as_bytes().chunks(4) {
        let digits: Vec<u32> = chunk.iter().copied().filter(|&c| c != b'=').map(value).collect();
        let n = digits.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (d << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len().max(1)]);
    }
    out
}

/// What the NDJSON report says the server answered.
#[derive(Default)]
struct Observed {
    /// Responses by status code.
    statuses: HashMap<u16, usize>,
    /// How often each event ID was acknowledged (schemathesis resends the same IDs).
    acked: HashMap<String, usize>,
}

fn read_report(dir: &Path) -> Observed {
    let mut seen = Observed::default();
    let report = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .expect("schemathesis wrote an NDJSON report");
    for line in BufReader::new(std::fs::File::open(report).unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let Some(interactions) = event.pointer("/ScenarioFinished/recorder/interactions").and_then(Value::as_object)
        else {
            continue;
        };
        for response in interactions.values().filter_map(|i| i.get("response").filter(|r| !r.is_null())) {
            let status = response["status_code"].as_u64().expect("status_code") as u16;
            *seen.statuses.entry(status).or_default() += 1;
            let body = match &response["content"] {
                Value::Object(c) => c.get("$base64").and_then(Value::as_str).map(base64_decode).unwrap_or_default(),
                Value::String(s) => s.clone().into_bytes(),
                _ => Vec::new(),
            };
            // 202, and 429/503 for the part that did land, list the IDs now on the stream.
            if matches!(status, 202 | 429 | 503) {
                let body: Value = serde_json::from_slice(&body).expect("JSON body");
                for id in body["event_ids"].as_array().expect("event_ids") {
                    *seen.acked.entry(id.as_str().unwrap().to_owned()).or_default() += 1;
                }
            }
        }
    }
    seen
}

/// Invariant: every generated request gets a documented, non-5xx answer matching the spec, and
/// what the API acknowledged is exactly what is on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "test code: one scenario, start the API, run schemathesis, compare the stream"
)]
async fn schemathesis_finds_no_disagreement_with_openapi_yaml() {
    let root = repo_root();
    let schemathesis = root.join(".local/venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run `bash scripts/venv.sh` (installs scripts/requirements/apitest.txt)",
        schemathesis.display()
    );
    let client = kinesis::client().await;
    let stream = kinesis::fresh_stream(&client, 2).await;
    let work = std::env::temp_dir().join(format!("schemathesis-{stream}"));
    std::fs::create_dir_all(&work).unwrap();

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let producer_log = work.join("producer.log");
    let log = std::fs::File::create(&producer_log).unwrap();
    let _producer = Producer(
        Command::new(env!("CARGO_BIN_EXE_producer-api"))
            .env("STREAM_NAME", &stream)
            .env("BIND_ADDR", addr.to_string())
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SITES_JSON", SITES)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the producer binary"),
    );
    let started = Instant::now();
    while !health_ok(addr) {
        assert!(started.elapsed() < Duration::from_secs(20), "producer not healthy: {}", tail(&producer_log, 4000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report_dir = work.join("report");
    let output = work.join("schemathesis.txt");
    let out = std::fs::File::create(&output).unwrap();
    // Run from the scratch directory: schemathesis and hypothesis keep caches (.schemathesis/,
    // .hypothesis/) in the working directory, and the work tree is no place for them.
    let mut run = Command::new(&schemathesis)
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", root.join("producer-api/tests/api_fuzz/hooks.py"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(root.join("producer-api/tests/api_fuzz/schemathesis.toml"))
        .arg("run")
        .arg(root.join("producer-api/openapi.yaml"))
        .args(["--url", &format!("http://{addr}")])
        .args(["--header", "X-Site-Key: pk_fuzz"])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES, "--continue-on-failure"])
        .args(["--generation-database", "none", "--request-timeout", "10", "--no-color"])
        .args(["--report", "ndjson", "--report-dir"])
        .arg(&report_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start schemathesis");
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = run.kill();
            let _ = run.wait();
            panic!("schemathesis still running after {RUN_LIMIT:?}: {}", tail(&output, 6000));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        status.success(),
        "schemathesis found problems ({status}); full output in {}:\n{}",
        output.display(),
        tail(&output, 12_000)
    );

    let seen = read_report(&report_dir);
    let total: usize = seen.statuses.values().sum();
    eprintln!("schemathesis: {total} requests, by status {:?}", seen.statuses);
    assert!(total >= MIN_REQUESTS, "only {total} requests were sent");
    assert!(seen.statuses.keys().all(|&s| s < 500), "5xx answers: {:?}", seen.statuses);

    // Nothing refused reached the stream, and nothing acknowledged is missing from it.
    let mut stored: HashMap<String, usize> = HashMap::new();
    for data in kinesis::read_events(&client, &stream).await {
        let event = schemas::decode_record(&data).expect("every record on the stream decodes");
        assert!(
            event.client_ip.as_deref() == Some("127.0.0.0"),
            "only the anonymised address is stored: {:?}",
            event.client_ip
        );
        *stored.entry(event.event_id.to_string()).or_default() += 1;
    }
    assert_eq!(stored.values().sum::<usize>(), seen.acked.values().sum::<usize>(), "records vs acknowledgements");
    assert!(stored == seen.acked, "the stream holds exactly the acknowledged events");

    // The client connected from 127.0.0.1: only the start-up line (the listen address) may say so.
    let log = std::fs::read_to_string(&producer_log).unwrap();
    let leaks: Vec<&str> =
        log.lines().filter(|l| l.contains("127.0.0.1") && !l.contains("producer listening")).take(3).collect();
    assert!(leaks.is_empty(), "the producer logged a client address: {leaks:?}");

    let _ = std::fs::remove_dir_all(&work);
}
