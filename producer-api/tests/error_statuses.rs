//! Every error status openapi.yaml declares, provoked against the real server over TCP (in
//! process, on loopback, with an in-memory sink): for each operation and each 4xx/5xx it
//! declares, and for the unrouted answers (`x-unrouted-responses`), a request that earns it. Each
//! answer must have that status, `Content-Type: application/json` and a body valid against the
//! schema the spec gives that answer (the `Error` shape, `{"error": "..."}`, whichever layer
//! answered: the API, axum's router, the timeout layer, or hyper itself). A status the spec
//! declares that this test cannot provoke fails it, so the spec and the server stay in step.
//! (The gateway's own answers, `x-gateway-responses`, are AWS's: terraform/tests check them.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use producer_api::Config;
use producer_api::publish::{CallError, RecordResult, RecordSink, StreamRecord};
use producer_api::server::{ConnectionTimeouts, lambda_app, serve_with_timeouts, server_app};
use serde_json::{Value, json};
use service_kit::env::FromEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The local server's request timeout: short, so the 408 case is quick.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);

/// `open` takes anything; `tight` holds one batch and then refuses (429); `open` allows one origin.
const SITES: &str = r#"{"sites": [
    {"id": "open", "key": "pk_open", "allowed_origins": ["https://shop.example"],
     "events_per_second": 100000, "burst": 100000, "per_ip_events_per_second": 100000, "per_ip_burst": 100000},
    {"id": "tight", "key": "pk_tight", "allowed_origins": [],
     "events_per_second": 1, "burst": 500, "per_ip_events_per_second": 1, "per_ip_burst": 500}]}"#;

/// Keeps nothing; answers by event type, so a request chooses the stream's behaviour: the
/// stream refuses (`stream_down`), throttles (`stream_throttles`), or the sink panics (`bug`: a
/// stand-in for any bug on the request path).
struct Sink;

impl RecordSink for Sink {
    async fn put_records(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, CallError> {
        let has = |event_type: &str| {
            let needle = format!(r#""event_type":"{event_type}""#);
            records.iter().any(|r| String::from_utf8_lossy(&r.data).contains(&needle))
        };
        assert!(!has("bug"), "a bug on the request path");
        let answer = if has("stream_down") {
            RecordResult::Failed("InternalFailure".into())
        } else if has("stream_throttles") {
            RecordResult::Failed("ProvisionedThroughputExceededException".into())
        } else {
            RecordResult::Ok
        };
        Ok(vec![answer; records.len()])
    }
}

/// What came back on one connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn parse(bytes: &[u8]) -> Reply {
    let raw = String::from_utf8_lossy(bytes).into_owned();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no answer: {raw:?}"));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.get(9..12)).and_then(|s| s.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = unchunk(&body);
    }
    Reply { status, headers, body, raw }
}

fn unchunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&bytes[..eol]).trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&bytes[eol + 2..eol + 2 + size]);
        bytes = &bytes[eol + 2 + size + 2..];
    }
    out
}

/// Sends `request` while reading the answer (a server may answer before it has read all of it),
/// then, if `hold` is set, sends nothing more for that long, keeping the connection open.
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Reply {
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut buf)).await.expect("answer in time");
    drop(writer.await);
    parse(&buf)
}

fn request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A JSON POST with the open site's key.
fn post(body: &str) -> Vec<u8> {
    request("POST", "/events", "Content-Type: application/json\r\nX-Site-Key: pk_open\r\n", body.as_bytes())
}

/// The two routers as they run: the local server's (coalescing, with the timeout layer) and
/// Lambda's (publishing within the request), each served over TCP by the local server's loop.
struct Servers {
    local: SocketAddr,
    lambda: SocketAddr,
}

async fn start() -> Servers {
    let timeout = REQUEST_TIMEOUT.as_millis().to_string();
    let vars = [
        ("STREAM_NAME", "s"),
        ("SITES_JSON", SITES),
        ("REQUEST_TIMEOUT_MS", timeout.as_str()),
        ("PUBLISH_BUDGET_MS", "200"),
        ("LINGER_MS", "1"),
    ];
    let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap();
    let mut addrs = Vec::new();
    for app in [server_app(&config, Sink), lambda_app(&config, Sink)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        tokio::spawn(serve_with_timeouts(
            listener,
            app,
            ConnectionTimeouts::from_config(&config),
            std::future::pending(),
        ));
    }
    Servers { local: addrs[0], lambda: addrs[1] }
}

/// Requests that earn `status` from `method path` (each answered on its own connection).
async fn provoke(s: &Servers, method: &str, path: &str, status: u16) -> Vec<Reply> {
    let local = s.local;
    let event = r#"{"event_type":"a"}"#;
    // A head hyper refuses to parse, or finds too large, on any route.
    let bare_cr = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nX-A: a\rB: c\r\nConnection: close\r\n\r\n");
    let long_uri = request(method, &format!("{path}?q={}", "a".repeat(70 * 1024)), "", b"");
    let many_headers: String = (0..200).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let many_headers = request(method, path, &many_headers, b"");
    let huge_header = request(method, path, &format!("X-Huge: {}\r\n", "h".repeat(512 * 1024)), b"");
    let mut replies = Vec::new();
    let requests: Vec<(SocketAddr, Vec<u8>)> = match (method, status) {
        (_, 400) if method != "POST" => vec![(local, bare_cr.into_bytes())],
        (_, 414) => vec![(local, long_uri)],
        (_, 431) => vec![(local, many_headers), (local, huge_header)],
        ("POST", 400) => vec![
            (local, bare_cr.into_bytes()),
            (local, post("{not json")),
            (local, post("[]")),
            (local, post(r#"{"events":[{"event_type":"a"}],"events":[{"event_type":"b"}]}"#)),
            (local, post(r#"{"event_type":"a","event_type":"b"}"#)),
            (local, post(r#"{"event_type":"a","properties":{"k":1,"\u006b":2}}"#)),
            (local, post(r#"{"event_type":"a","event_id":"00000000-0000-0000-0000-000000000000"}"#)),
            (local, post(r#"{"event_type":"a","event_id":"ffffffff-ffff-ffff-ffff-ffffffffffff"}"#)),
        ],
        ("POST", 401) => vec![
            (local, request("POST", path, "Content-Type: application/json\r\n", event.as_bytes())),
            (
                local,
                request("POST", path, "Content-Type: application/json\r\nX-Site-Key: pk_nope\r\n", event.as_bytes()),
            ),
        ],
        ("POST", 403) => vec![(
            local,
            request(
                "POST",
                path,
                "Content-Type: application/json\r\nX-Site-Key: pk_open\r\nOrigin: https://evil.example\r\n",
                event.as_bytes(),
            ),
        )],
        ("POST", 408) => {
            // Half a body, then silence past the request timeout.
            let mut stream = TcpStream::connect(local).await.unwrap();
            let head = "POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-Site-Key: pk_open\r\nContent-Length: 40\r\n\r\n{\"event";
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 4, stream.read_to_end(&mut buf)).await;
            replies.push(parse(&buf));
            vec![]
        }
        ("POST", 413) => vec![
            (local, post(&" ".repeat(1024 * 1024 + 1))),
            (local, post(&format!("[{}]", vec![event; 501].join(",")))),
        ],
        ("POST", 415) => {
            vec![(local, request("POST", path, "Content-Type: text/html\r\nX-Site-Key: pk_open\r\n", event.as_bytes()))]
        }
        ("POST", 429) => {
            let batch = format!("[{}]", vec![event; 500].join(","));
            let tight = |body: &str| {
                request("POST", path, "Content-Type: application/json\r\nX-Site-Key: pk_tight\r\n", body.as_bytes())
            };
            let first = exchange(local, tight(&batch)).await;
            assert_eq!(first.status, 202, "the tight site's one batch: {}", first.raw);
            vec![(local, tight(event)), (local, post(r#"{"event_type":"stream_throttles"}"#))]
        }
        ("POST", 500) => vec![(s.lambda, post(r#"{"event_type":"bug"}"#))],
        ("POST", 503) => {
            vec![(local, post(r#"{"event_type":"stream_down"}"#)), (s.lambda, post(r#"{"event_type":"stream_down"}"#))]
        }
        _ => {
            panic!("openapi.yaml declares {status} for {method} {path}, and this test cannot provoke it: teach it how")
        }
    };
    for (addr, req) in requests {
        replies.push(exchange(addr, req).await);
    }
    replies
}

/// Follows a `$ref` inside the spec.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => resolve(spec, spec.pointer(pointer.trim_start_matches('#')).expect("a $ref that resolves")),
        None => value,
    }
}

/// Checks one answer against the response the spec declares for it.
fn check(spec: &Value, case: &str, status: u16, response: &Value, reply: &Reply) {
    assert_eq!(reply.status, status, "{case}: {}", reply.raw.chars().take(800).collect::<String>());
    assert_eq!(reply.header("content-type"), Some("application/json"), "{case}: {}", reply.raw);
    let body: Value =
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {}", reply.raw));
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{case}: no error message: {body}");
    let declared = resolve(spec, response)
        .pointer("/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{case}: the spec gives no JSON body for {status}"));
    // The spec's own schemas, with `$ref`s into components resolved against the spec.
    let schema = json!({"allOf": [declared], "components": spec["components"]});
    let validator = jsonschema::draft4::new(&schema).expect("the spec's schema compiles");
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{case}: body {body} is not what the spec says: {errors:?}");
}

/// Invariant (#20): every error status the spec declares, for each operation and for unrouted
/// requests, is one the server gives in the spec's shape and content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_error_status_is_json_in_the_spec_shape() {
    let yaml = include_str!("../openapi.yaml");
    let spec: Value = serde_norway::from_str(yaml).expect("openapi.yaml parses");
    let servers = start().await;
    let mut provoked = BTreeMap::<String, usize>::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            for (status, response) in operation["responses"].as_object().unwrap() {
                let code: u16 = status.parse().expect("a numeric status");
                if code < 400 {
                    continue;
                }
                let case = format!("{method} {path} {code}");
                let replies = provoke(&servers, &method, path, code).await;
                assert!(!replies.is_empty(), "{case}: nothing sent");
                for (i, reply) in replies.iter().enumerate() {
                    check(&spec, &format!("{case} #{i}"), code, response, reply);
                }
                provoked.insert(case, replies.len());
            }
        }
    }
    // Unrouted: any path the API lacks, any method a route lacks (on every front).
    let unrouted = &spec["x-unrouted-responses"];
    for (status, requests) in [
        (
            "404",
            vec![
                request("GET", "/nope", "", b""),
                request("POST", "/a/b/events", "", b"{}"),
                request("GET", "/", "", b""),
            ],
        ),
        (
            "405",
            vec![
                request("DELETE", "/events", "", b""),
                request("PUT", "/events", "", b"{}"),
                request("POST", "/health", "", b""),
            ],
        ),
    ] {
        let response = &unrouted[status];
        assert!(response.is_object(), "x-unrouted-responses declares {status}");
        for addr in [servers.local, servers.lambda] {
            for (i, req) in requests.iter().enumerate() {
                let reply = exchange(addr, req.clone()).await;
                check(&spec, &format!("unrouted {status} #{i} on {addr}"), status.parse().unwrap(), response, &reply);
                if status == "405" {
                    assert!(reply.header("allow").is_some(), "405 keeps its Allow header: {}", reply.raw);
                }
            }
        }
        provoked.insert(format!("unrouted {status}"), requests.len());
    }
    assert_eq!(unrouted.as_object().map(|o| o.len()), Some(2), "every unrouted status is provoked above");
    // A floor on what the walk covered, so that an empty or unreadable spec cannot pass.
    for must in [
        "POST /events 400",
        "POST /events 408",
        "POST /events 414",
        "POST /events 431",
        "POST /events 500",
        "GET /health 431",
    ] {
        assert!(provoked.contains_key(must), "{must} not walked: {provoked:?}");
    }
}
