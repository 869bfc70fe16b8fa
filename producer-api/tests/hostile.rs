//! Hostile inputs against the real local server (in-process, Kinesis on a fresh kinesalite
//! stream), over raw TCP: oversized and compressed bodies, deep nesting, huge numbers, control
//! characters, path traversal and SQL in fields, header abuse, slow and idle clients. Each must get
//! a clear 4xx (or, for slow clients, a 408 or a closed connection) and put nothing on the stream:
//! after every case the stream must hold exactly the events of the valid control requests.

#[path = "support/kinesis.rs"]
mod kinesis;

use service_kit::env::FromEnv;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use producer_api::Config;
use producer_api::kinesis::KinesisSink;
use producer_api::server::{ConnectionTimeouts, serve_with_timeouts, server_app};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Every test request comes from this loopback address, so the test can tell that only its
/// anonymised form (127.0.0.0) is ever stored.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 77];
/// `REQUEST_TIMEOUT_MS` of the server under test: low, so slow-client cases are quick.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// Idle connections are closed after this long (75 s in production; short here to test it).
const IDLE_TIMEOUT: Duration = Duration::from_millis(2500);
/// Longest any one exchange may take before the test gives up on it.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// What came back on one connection.
#[derive(Debug)]
struct Reply {
    /// `None`: the connection was closed without an answer.
    status: Option<u16>,
    body: Value,
    raw: String,
}

struct Harness {
    addr: SocketAddr,
    client: Client,
    stream: String,
    /// Event IDs acknowledged by the valid control requests: exactly what the stream may hold.
    acked: HashSet<String>,
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((CLIENT_IP, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

fn parse(bytes: &[u8]) -> Reply {
    let raw = String::from_utf8_lossy(bytes).into_owned();
    let status = raw.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|s| s.parse().ok());
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null));
    Reply { status, body: body.unwrap_or(Value::Null), raw }
}

/// Sends `request` while reading the answer, so a server that answers (or hangs up) before the
/// whole request is sent is still heard. Write errors are expected then and ignored.
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Reply {
    let (mut rd, mut wr) = connect(addr).await.into_split();
    // The write half is handed back, not dropped: dropping it sends FIN, and a half-closed
    // client is not what these cases are about.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    // A reset after the answer is fine: what was read before it stays in `buf`.
    let _ = tokio::time::timeout(EXCHANGE_LIMIT, rd.read_to_end(&mut buf)).await.expect("exchange finished in time");
    drop(writer.await);
    parse(&buf)
}

fn post_request(extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

impl Harness {
    async fn start() -> Harness {
        let client = kinesis::client().await;
        let stream = kinesis::fresh_stream(&client, 1).await;
        let config = Config::from_lookup(|k| match k {
            "STREAM_NAME" => Some(stream.clone()),
            "LINGER_MS" => Some("2".into()),
            "REQUEST_TIMEOUT_MS" => Some(REQUEST_TIMEOUT.as_millis().to_string()),
            // These requests are about HTTP framing, not keys: the single-site keyless mode
            // (keys are tested in api.rs and lambda_runtime.rs).
            "SITES_CONFIG" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json").into()),
            "DEFAULT_SITE_KEY" => Some("pk_local_demo".into()),
            _ => None,
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = server_app(&config, KinesisSink::new(client.clone(), stream.clone()));
        let timeouts = ConnectionTimeouts { idle: IDLE_TIMEOUT, ..ConnectionTimeouts::from_config(&config) };
        tokio::spawn(serve_with_timeouts(listener, app, timeouts, std::future::pending()));
        Harness { addr, client, stream, acked: HashSet::new() }
    }

    /// A valid request; its events must be acknowledged and are then expected on the stream.
    async fn control(&mut self, events: Value, extra_headers: &str) -> Reply {
        let reply = exchange(
            self.addr,
            post_request(&format!("Content-Type: application/json\r\n{extra_headers}"), events.to_string().as_bytes()),
        )
        .await;
        assert_eq!(reply.status, Some(202), "control request refused: {}", reply.raw);
        let sent = if events.is_array() { events.as_array().unwrap().len() } else { 1 };
        let ids = reply.body["event_ids"].as_array().unwrap();
        assert_eq!(ids.len(), sent, "every control event acknowledged: {}", reply.raw);
        self.acked.extend(ids.iter().map(|id| id.as_str().unwrap().to_owned()));
        reply
    }

    /// Asserts the stream holds exactly the control events, each record decodes (passes the
    /// consumer's checks) and no record holds the client's full address. Returns the records.
    async fn assert_stream_is_controls_only(&self, case: &str) -> HashMap<String, schemas::EnrichedEvent<'static>> {
        let mut stored = HashMap::new();
        for data in kinesis::read_events(&self.client, &self.stream).await {
            let text = String::from_utf8_lossy(&data);
            assert!(!text.contains("127.0.0.77"), "{case}: the full client address was stored: {text}");
            let event = schemas::decode_record(&data)
                .unwrap_or_else(|e| panic!("{case}: poison record {e}: {text}"))
                .into_owned();
            assert_eq!(event.client_ip.as_deref(), Some("127.0.0.0"), "{case}");
            assert!(stored.insert(event.event_id.to_string(), event).is_none(), "{case}: a record twice");
        }
        let mut want: Vec<&String> = self.acked.iter().collect();
        let mut got: Vec<&String> = stored.keys().collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{case}: the stream holds something other than the control events");
        stored
    }

    /// One hostile request: `want` says which answers are right; then the stream is checked.
    async fn hostile(&self, case: &str, request: Vec<u8>, want: Want) {
        let reply = exchange(self.addr, request).await;
        want.check(case, &reply);
        self.assert_stream_is_controls_only(case).await;
    }
}

/// The acceptable answers to a hostile request.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This status from the API, with a JSON `{"error": …}` body.
    Api(u16),
    /// Refused by the HTTP layer before the API (malformed or oversized head): this status
    /// with the API's JSON `{"error": …}` body (#20), or the connection closed without an answer.
    Http(u16),
}

impl Want {
    fn check(self, case: &str, reply: &Reply) {
        match self {
            Want::Api(status) => {
                assert_eq!(reply.status, Some(status), "{case}: {}", truncate(&reply.raw));
                assert!(
                    reply.body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{case}: {}",
                    truncate(&reply.raw)
                );
            }
            Want::Http(status) => {
                assert!(
                    reply.status.is_none() || reply.status == Some(status),
                    "{case}: wanted {status} or a closed connection, got {}",
                    truncate(&reply.raw)
                );
                assert!(
                    reply.status.is_none()
                        || (reply.body["error"].as_str().is_some_and(|e| !e.is_empty())
                            && reply.raw.contains("content-type: application/json\r\n")),
                    "{case}: the HTTP layer's answer is not in the API's error shape: {}",
                    truncate(&reply.raw)
                );
            }
        }
    }
}

fn truncate(s: &str) -> &str {
    let end = (0..=s.len().min(600)).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

fn json_post(body: &[u8]) -> Vec<u8> {
    post_request("Content-Type: application/json\r\n", body)
}

/// Invariant: hostile input gets a clear 4xx and never reaches the stream; valid requests sent
/// in between are stored complete, with only the anonymised address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "test code: one table of hostile requests and their answers")]
async fn hostile_requests_are_refused_and_store_nothing() {
    let mut h = Harness::start().await;
    h.control(json!({"event_type": "page_view", "url": "https://shop.example/"}), "").await;
    h.assert_stream_is_controls_only("first control").await;

    // --- size -------------------------------------------------------------------------------
    let five_mib = vec![b' '; 5 * 1024 * 1024];
    h.hostile("5 MiB raw body", json_post(&five_mib), Want::Api(413)).await;
    let mut chunked =
        b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..80 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&[b' '; 64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    h.hostile("5 MiB chunked body", chunked, Want::Api(413)).await;
    let bad_chunk = b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"eve\r\nzz\r\n".to_vec();
    h.hostile("malformed chunked body", bad_chunk, Want::Api(400)).await;
    // 64 MiB of '[' in ~64 KiB: inflation stops at 1 MiB + 1 byte.
    let bomb = gzip(&vec![b'['; 64 * 1024 * 1024]);
    assert!(bomb.len() < 256 * 1024, "bomb is {} bytes", bomb.len());
    h.hostile(
        "gzip bomb",
        post_request("Content-Type: application/json\r\nContent-Encoding: gzip\r\n", &bomb),
        Want::Api(413),
    )
    .await;
    let zeros = gzip(&vec![0u8; 32 * 1024 * 1024]);
    h.hostile(
        "gzip bomb of NULs",
        post_request("Content-Type: text/plain\r\nContent-Encoding: gzip\r\n", &zeros),
        Want::Api(413),
    )
    .await;
    h.hostile(
        "gzip header, plain body",
        post_request("Content-Type: application/json\r\nContent-Encoding: gzip\r\n", br#"{"event_type":"a"}"#),
        Want::Api(400),
    )
    .await;
    let mut trailing = gzip(br#"{"event_type":"a"}"#);
    trailing.extend_from_slice(b"\x00garbage");
    h.hostile(
        "gzip with trailing garbage",
        post_request("Content-Type: application/json\r\nContent-Encoding: gzip\r\n", &trailing),
        Want::Api(400),
    )
    .await;
    for enc in ["br", "deflate", "gzip, gzip", "x-gzip;q=1"] {
        h.hostile(
            &format!("Content-Encoding: {enc}"),
            post_request(
                &format!("Content-Type: application/json\r\nContent-Encoding: {enc}\r\n"),
                br#"{"event_type":"a"}"#,
            ),
            Want::Api(415),
        )
        .await;
    }
    let too_many = format!("[{}]", vec![r#"{"event_type":"a"}"#; 501].join(","));
    h.hostile("501 events", json_post(too_many.as_bytes()), Want::Api(413)).await;

    // --- nesting ----------------------------------------------------------------------------
    // serde_json stops at 128 levels: a parse error (400), never a stack overflow.
    h.hostile("100k unclosed [", json_post(&vec![b'['; 100_000]), Want::Api(400)).await;
    let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    h.hostile("100k closed []", json_post(closed.as_bytes()), Want::Api(400)).await;
    let deep_props =
        format!(r#"{{"event_type":"a","properties":{}1{}}}"#, r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    h.hostile("100k nested objects in properties", json_post(deep_props.as_bytes()), Want::Api(400)).await;
    let gz_deep = gzip(&vec![b'['; 1024 * 1024]);
    h.hostile(
        "1 Mi [ gzipped",
        post_request("Content-Type: application/json\r\nContent-Encoding: gzip\r\n", &gz_deep),
        Want::Api(400),
    )
    .await;
    let six_deep = json!({"event_type": "a", "properties": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}});
    h.hostile("properties 6 levels deep", json_post(six_deep.to_string().as_bytes()), Want::Api(400)).await;
    let at_serde_limit =
        format!(r#"{{"event_type":"a","properties":{{"a":{}1{}}}}}"#, "[".repeat(120), "]".repeat(120));
    h.hostile("properties 120 levels deep", json_post(at_serde_limit.as_bytes()), Want::Api(400)).await;

    // --- numbers ----------------------------------------------------------------------------
    for (case, body) in [
        ("1e400 in properties", r#"{"event_type":"a","properties":{"n":1e400}}"#.to_owned()),
        ("-1e400 in properties", r#"{"event_type":"a","properties":{"n":-1e400}}"#.to_owned()),
        ("100-digit event_type", format!(r#"{{"event_type":{}}}"#, "9".repeat(100))),
        ("100-digit event_id", format!(r#"{{"event_type":"a","event_id":{}}}"#, "9".repeat(100))),
        ("100-digit occurred_at", format!(r#"{{"event_type":"a","occurred_at":{}}}"#, "9".repeat(100))),
        ("NaN", r#"{"event_type":"a","properties":{"n":NaN}}"#.to_owned()),
        ("Infinity", r#"{"event_type":"a","properties":{"n":Infinity}}"#.to_owned()),
        ("year 99999", r#"{"event_type":"a","occurred_at":"99999-01-01T00:00:00Z"}"#.to_owned()),
        ("far future", r#"{"event_type":"a","occurred_at":"9999-12-31T23:59:59Z"}"#.to_owned()),
        ("leap second", r#"{"event_type":"a","occurred_at":"2016-12-31T23:59:60Z"}"#.to_owned()),
        ("timestamp in UTC words", r#"{"event_type":"a","occurred_at":"2024-05-01T12:00:00 UTC"}"#.to_owned()),
    ] {
        h.hostile(case, json_post(body.as_bytes()), Want::Api(400)).await;
    }

    // --- control characters and encodings -------------------------------------------------
    for (case, body) in [
        ("escaped NUL in anonymous_id", br#"{"event_type":"a","anonymous_id":"x\u0000y"}"#.to_vec()),
        ("escaped NUL in event_type", br#"{"event_type":"a\u0000"}"#.to_vec()),
        ("CRLF in url", br#"{"event_type":"a","url":"https://x/\r\nSet-Cookie: a=b"}"#.to_vec()),
        ("ESC in user_agent", br#"{"event_type":"a","user_agent":"\u001b[31mred"}"#.to_vec()),
        ("DEL in session_id", br#"{"event_type":"a","session_id":"s\u007f"}"#.to_vec()),
        ("raw NUL byte in a string", b"{\"event_type\":\"a\",\"user_id\":\"x\x00y\"}".to_vec()),
        ("raw NUL byte outside strings", b"{\"event_type\":\"a\"}\x00".to_vec()),
        ("raw newline in a string", b"{\"event_type\":\"a\",\"user_id\":\"x\ny\"}".to_vec()),
        ("invalid UTF-8", b"{\"event_type\":\"a\",\"user_id\":\"\xff\xfe\"}".to_vec()),
        ("lone surrogate", br#"{"event_type":"a","user_id":"\ud800"}"#.to_vec()),
        ("UTF-16 body", "{\"event_type\":\"a\"}".encode_utf16().flat_map(u16::to_le_bytes).collect()),
        ("empty body", Vec::new()),
        ("forged client_ip", br#"{"event_type":"a","client_ip":"8.8.8.8"}"#.to_vec()),
        ("forged received_at", br#"{"event_type":"a","received_at":"2020-01-01T00:00:00Z"}"#.to_vec()),
    ] {
        h.hostile(case, json_post(&body), Want::Api(400)).await;
    }

    // --- names that try to escape a path, or a SQL string -----------------------------------
    for event_type in [
        "../../etc/passwd",
        "..",
        "a/../../b",
        "dt=2024-01-01/hour=00",
        "a\\..\\b",
        "%2e%2e%2f",
        "a'; DROP TABLE seen_events;--",
        "a\" OR \"1\"=\"1",
        "a; DELETE FROM event_type_counts",
        "A",
        "",
    ] {
        let body = json!({"event_type": event_type}).to_string();
        h.hostile(&format!("event_type {event_type:?}"), json_post(body.as_bytes()), Want::Api(400)).await;
    }
    let traversal_id = json!({"event_type": "a", "event_id": "../../../../00000000-0000-0000-0000-000000000000"});
    h.hostile("event_id with ../", json_post(traversal_id.to_string().as_bytes()), Want::Api(400)).await;
    // (A single segment before /events is the REST API's stage prefix: `/<anything>/events` is
    // served like `/events`, which is an alias, not a traversal.)
    for path in ["/events/../../etc/passwd", "/v1/v2/events", "/events%00", "/events/", "/../events/x"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{{\"event_type\":\"a\"}}"
        );
        let reply = exchange(h.addr, req.into_bytes()).await;
        assert!(reply.status.is_some_and(|s| s == 404 || s == 400), "path {path}: {}", truncate(&reply.raw));
        h.assert_stream_is_controls_only(path).await;
    }

    // --- headers ----------------------------------------------------------------------------
    let bare_cr = b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-A: a\rInjected: b\r\nContent-Length: 18\r\n\r\n{\"event_type\":\"a\"}".to_vec();
    h.hostile("bare CR in a header value", bare_cr, Want::Http(400)).await;
    let nul_header = post_request("Content-Type: application/json\r\nX-A: a\x00b\r\n", br#"{"event_type":"a"}"#);
    h.hostile("NUL in a header value", nul_header, Want::Http(400)).await;
    let huge = format!("Content-Type: application/json\r\nX-Huge: {}\r\n", "a".repeat(1024 * 1024));
    h.hostile("1 MiB header value", post_request(&huge, br#"{"event_type":"a"}"#), Want::Http(431)).await;
    let many: String = (0..200).map(|i| format!("X-{i}: {i}\r\n")).collect();
    h.hostile(
        "200 headers",
        post_request(&format!("Content-Type: application/json\r\n{many}"), b"{}"),
        Want::Http(431),
    )
    .await;
    let two_lengths =
        b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 18\r\nContent-Length: 5\r\n\r\n{\"event_type\":\"a\"}".to_vec();
    h.hostile("two Content-Length values", two_lengths, Want::Http(400)).await;
    for ct in ["application/xml", "multipart/form-data; boundary=x", "application/jsonp", "text/html"] {
        let req = post_request(&format!("Content-Type: {ct}\r\n"), br#"{"event_type":"a"}"#);
        h.hostile(&format!("Content-Type {ct:?}"), req, Want::Api(415)).await;
    }
    h.hostile("no Content-Type", post_request("", br#"{"event_type":"a"}"#), Want::Api(415)).await;

    // Header abuse that is not an error: the event is stored, but only in its checked form.
    let tab_ua = h.control(json!({"event_type": "ua_tab"}), "User-Agent: evil\tagent\r\n").await;
    let huge_ua = h.control(json!({"event_type": "ua_huge"}), &format!("User-Agent: {}\r\n", "u".repeat(60_000))).await;
    let spoofed = h.control(json!({"event_type": "xff"}), "X-Forwarded-For: 8.8.8.8\r\n").await;
    // Valid JSON that only looks dangerous is data: stored byte for byte (the consumer binds
    // SQL parameters and builds object keys from stream positions, never from event fields).
    let sql = json!({"event_type": "signup", "user_id": "'; DROP TABLE seen_events;--",
                     "url": "https://x/../../etc/passwd", "properties": {"q": "1' OR '1'='1", "nul": "\u{0}"}});
    h.control(sql.clone(), "").await;
    // A 100-digit integer is a valid JSON number (and valid for schemas/event.schema.json): it
    // is kept as the nearest double, like any JSON parser without big numbers would.
    let big = format!(r#"{{"event_type":"big_number","properties":{{"n":{}}}}}"#, "9".repeat(100));
    let reply = exchange(h.addr, json_post(big.as_bytes())).await;
    assert_eq!(reply.status, Some(202), "{}", reply.raw);
    let big_id = reply.body["event_ids"][0].as_str().unwrap().to_owned();
    h.acked.insert(big_id.clone());

    let stored = h.assert_stream_is_controls_only("header controls").await;
    let ua = |r: &Reply| stored[r.body["event_ids"][0].as_str().unwrap()].user_agent.clone().unwrap();
    assert_eq!(ua(&tab_ua), "evil agent", "TAB replaced, so the consumer's check passes");
    assert_eq!(ua(&huge_ua).len(), 512, "header user agent truncated");
    assert_eq!(stored[spoofed.body["event_ids"][0].as_str().unwrap()].client_ip.as_deref(), Some("127.0.0.0"));
    let sql_stored = stored.values().find(|e| e.event_type == "signup").unwrap();
    assert_eq!(sql_stored.user_id.as_deref(), sql["user_id"].as_str());
    assert_eq!(Value::Object(sql_stored.properties.to_map()), sql["properties"]);
    let big_props = stored[&big_id].properties.to_map();
    let n = &big_props["n"];
    assert!(n.as_f64().is_some_and(|f| f.is_finite() && f > 9.9e99), "{n}");

    // --- methods ----------------------------------------------------------------------------
    for method in ["PUT", "DELETE", "PATCH", "TRACE", "CONNECT"] {
        let req = format!("{method} /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let reply = exchange(h.addr, req.into_bytes()).await;
        assert!(reply.status.is_some_and(|s| s == 405 || s == 400), "{method}: {}", truncate(&reply.raw));
    }
    let preflight = exchange(
        h.addr,
        b"OPTIONS /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(preflight.status, Some(200), "{}", preflight.raw);
    assert!(
        !preflight.raw.to_ascii_lowercase().contains("access-control-allow-origin"),
        "no origin is allowed by default"
    );

    slow_clients(&mut h).await;
    h.assert_stream_is_controls_only("end").await;
}

/// Slow and idle clients are cut off, and the server keeps answering others meanwhile.
async fn slow_clients(h: &mut Harness) {
    let addr = h.addr;

    // A body trickled slower than REQUEST_TIMEOUT: 408 (TimeoutLayer) or a closed connection.
    let body_trickle = tokio::spawn(async move {
        let mut s = connect(addr).await;
        s.write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{")
            .await
            .unwrap();
        trickle(s, Duration::from_secs(8)).await
    });
    // A head trickled one byte at a time: never reaches the handler, so the connection's own
    // request deadline (2 × REQUEST_TIMEOUT from the first byte) must close it.
    let head_trickle = tokio::spawn(async move {
        let mut s = connect(addr).await;
        s.write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        trickle(s, Duration::from_secs(8)).await
    });
    // Connections that send nothing, a bounded crowd of them.
    let idle: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let mut s = connect(addr).await;
                let mut buf = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                (started.elapsed(), matches!(n, Ok(Ok(0)) | Ok(Err(_))))
            })
        })
        .collect();

    // Meanwhile the server answers valid requests promptly.
    for i in 0..5 {
        let started = Instant::now();
        h.control(json!({"event_type": "during_slow_clients", "properties": {"i": i}}), "").await;
        // Generous for a loaded two-core machine; a server stalled by the slow clients would wait
        // for their cut-off (1 s to 2.5 s) on every request.
        assert!(started.elapsed() < Duration::from_millis(1500), "slow clients slowed others: {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (elapsed, answer) = body_trickle.await.unwrap();
    assert!(answer.is_none() || answer.as_ref().is_some_and(|r| r.status == Some(408)), "slow body: {answer:?}");
    assert!(elapsed < REQUEST_TIMEOUT * 2 + Duration::from_secs(1), "slow body cut after {elapsed:?}");
    let (elapsed, answer) = head_trickle.await.unwrap();
    assert!(answer.is_none() || answer.as_ref().is_some_and(|r| r.status == Some(408)), "slow head: {answer:?}");
    assert!(elapsed < REQUEST_TIMEOUT * 2 + Duration::from_secs(1), "slow head cut after {elapsed:?}");
    for handle in idle {
        let (elapsed, closed) = handle.await.unwrap();
        assert!(closed, "idle connection still open after {elapsed:?}");
        assert!(elapsed >= IDLE_TIMEOUT - Duration::from_millis(100), "closed too early: {elapsed:?}");
        assert!(elapsed < IDLE_TIMEOUT + Duration::from_secs(2), "idle connection closed late: {elapsed:?}");
    }
}

/// Sends one space every 250 ms until the server answers or hangs up (or `limit` passes);
/// returns how long that took and the answer, if there was one.
async fn trickle(s: TcpStream, limit: Duration) -> (Duration, Option<Reply>) {
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(250), rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    (elapsed, (!buf.is_empty()).then(|| parse(&buf)))
}

/// A valid event whose `occurred_at` is now: within the age limit, so it is accepted and its record decoded.
fn event_of_now() -> String {
    format!(r#"{{"event_type":"c","occurred_at":"{}","url":"https://x/"}}"#, chrono::Utc::now().format("%FT%TZ"))
}

/// Invariant: the pure request path never panics on mangled bodies, never yields records for a
/// body of more than 500 events, and every record it yields decodes downstream (no poison).
/// A seeded, bounded mutation fuzz: proptest is not a dependency of this package.
#[test]
fn prepare_never_panics_and_caps_batches() {
    use bytes::Bytes;
    use producer_api::ingest::prepare;
    use schemas::limits::MAX_BATCH_EVENTS;

    const CASES: usize = 4000;
    let mut rng = fastrand::Rng::with_seed(0x5eed_ba7c);
    let event = |i: usize| -> String {
        match i % 4 {
            0 => r#"{"event_type":"a"}"#.to_owned(),
            1 => format!(r#"{{"event_type":"b_{i}","user_id":"u{i}","properties":{{"k":[1,{{"x":null}}]}}}}"#),
            2 => event_of_now(),
            _ => r#"{"event_type":"Bad"}"#.to_owned(),
        }
    };
    let tokens: [&[u8]; 14] = [
        b"[",
        b"]",
        b"{",
        b"}",
        b"\"",
        b",",
        b":",
        b"\\u0000",
        b"1e400",
        b"\"events\":",
        b"null",
        b"\x00",
        b"\xff",
        b"\\",
    ];
    let started = Instant::now();
    for case in 0..CASES {
        let n = [0, 1, 2, 499, 500, 501, 1000][rng.usize(..7)];
        let events: Vec<String> = (0..n).map(event).collect();
        let mut body = match rng.u8(..3) {
            0 => format!("[{}]", events.join(",")),
            1 => format!(r#"{{"events":[{}]}}"#, events.join(",")),
            _ => event(case),
        }
        .into_bytes();
        for _ in 0..rng.usize(..4) {
            let at = rng.usize(..=body.len());
            match rng.u8(..4) {
                0 => body.splice(at..at, tokens[rng.usize(..tokens.len())].iter().copied()).for_each(drop),
                1 => body.truncate(at),
                2 if at < body.len() => body[at] = rng.u8(..),
                _ => body.splice(at..at, std::iter::repeat_n(b'[', rng.usize(..200))).for_each(drop),
            }
        }
        let events_in_body = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(a)) => Some(a.len()),
            Ok(Value::Object(o)) if o.len() == 1 => o.get("events").and_then(Value::as_array).map(Vec::len),
            _ => None,
        };
        let (wire, encoding) = if rng.bool() { (gzip(&body), Some("gzip")) } else { (body.clone(), None) };
        let facts = schemas::ServerFacts {
            received_at: chrono::Utc::now(),
            client_ip: Some(std::net::IpAddr::from(CLIENT_IP)),
            user_agent: Some("fuzz\tagent".into()),
        };
        match prepare(Bytes::from(wire), Some("application/json"), encoding, &facts) {
            Ok(p) => {
                let total = p.records.len() + p.rejected.len();
                assert!((1..=MAX_BATCH_EVENTS).contains(&total), "case {case}: {total} events prepared");
                if let Some(n) = events_in_body {
                    assert!(n <= MAX_BATCH_EVENTS, "case {case}: a body of {n} events was accepted");
                }
                for r in &p.records {
                    let e =
                        schemas::decode_record(&r.data).unwrap_or_else(|e| panic!("case {case}: poison record {e}"));
                    assert_eq!(e.client_ip.as_deref(), Some("127.0.0.0"));
                }
            }
            Err(e) => {
                if events_in_body.is_some_and(|n| n > MAX_BATCH_EVENTS) {
                    assert_eq!(e.status().as_u16(), 413, "case {case}: {e}");
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "fuzz loop over its time budget at case {case}");
    }
}
