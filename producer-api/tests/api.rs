//! The HTTP contract, over JSON fixtures of real API Gateway v1 and v2 events and plain local
//! requests, with an in-memory Kinesis sink. Every status code in openapi.yaml is exercised.

use service_kit::env::FromEnv;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use producer_api::Config;
use producer_api::publish::{CallError, RecordResult, RecordSink, StreamRecord};
use producer_api::server::{lambda_app, server_app};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Keeps what it is given; fails every record with `fail_code` when set.
#[derive(Default)]
struct MemorySink {
    records: Mutex<Vec<Value>>,
    fail_code: Option<&'static str>,
}

impl RecordSink for MemorySink {
    async fn put_records(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, CallError> {
        if let Some(code) = self.fail_code {
            return Ok(records.iter().map(|_| RecordResult::Failed(code.into())).collect());
        }
        let mut kept = self.records.lock().unwrap();
        // A record carries one or more events, one per line.
        kept.extend(
            records
                .iter()
                .flat_map(|r| schemas::record_events(&r.data))
                .map(|e| serde_json::from_slice::<Value>(e).unwrap()),
        );
        Ok(vec![RecordResult::Ok; records.len()])
    }
}

/// The test site: the key the fixtures carry, the origin they come from, limits no test reaches.
const SITES: &str = r#"{"sites": [{"id": "shop", "key": "pk_test_shop", "allowed_origins": ["https://shop.example"],
    "events_per_second": 100000, "burst": 100000, "per_ip_events_per_second": 100000, "per_ip_burst": 100000}]}"#;

/// A site whose buckets hold one full batch and refill at one event per second.
const TIGHT: &str = r#"{"sites": [{"id": "tight", "key": "pk_test_shop", "allowed_origins": ["https://shop.example"],
    "events_per_second": 1, "burst": 500, "per_ip_events_per_second": 1, "per_ip_burst": 500}]}"#;

fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![("STREAM_NAME", "s"), ("PUBLISH_BUDGET_MS", "300"), ("SITES_JSON", SITES)];
    vars.extend_from_slice(extra);
    Config::from_lookup(|k| vars.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap()
}

struct Fixture {
    app: Router,
}

/// The Lambda app over a leaked sink, so both the app and the test can look at the sink.
fn lambda(sink: MemorySink) -> (Fixture, &'static MemorySink) {
    let sink: &'static MemorySink = Box::leak(Box::new(sink));
    (Fixture { app: lambda_app(&config(&[]), SinkRef(sink)) }, sink)
}

/// Borrowed sink wrapper: the app needs an owned `RecordSink`.
struct SinkRef(&'static MemorySink);

impl RecordSink for SinkRef {
    async fn put_records(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, CallError> {
        self.0.put_records(records).await
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, headers, body)
}

/// Converts an API Gateway fixture into the request lambda_http hands to the router.
fn from_fixture(json: &str) -> Request<Body> {
    let req = lambda_http::request::from_str(json).expect("fixture parses as an API Gateway event");
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, Body::from(body.to_vec()))
}

fn post(body: impl Into<Body>, content_type: &str) -> Request<Body> {
    Request::post("/events")
        .header("content-type", content_type)
        .header("x-site-key", "pk_test_shop")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn apigw_v1_batch_is_accepted_with_anonymised_source_ip() {
    let (fx, sink) = lambda(MemorySink::default());
    let (status, _, body) = call(&fx.app, from_fixture(include_str!("fixtures/apigw-v1-post-events.json"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["event_ids"][0], "6f1c2a52-8a4e-4b7e-9d0c-2f7f3c1e9a01", "client id kept");
    assert!(body["event_ids"][1].as_str().unwrap().len() == 36, "id assigned");
    let records = sink.records.lock().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["v"], 1);
    assert_eq!(records[0]["event"]["client_ip"], "198.51.100.0");
    assert!(!records[0].to_string().contains("198.51.100.23"), "the full IP is never stored");
    assert!(records[0]["event"]["user_agent"].as_str().unwrap().contains("Safari"), "UA from header");
}

#[tokio::test]
async fn apigw_v2_send_beacon_text_plain_is_accepted_ipv6_anonymised() {
    let (fx, sink) = lambda(MemorySink::default());
    let (status, _, body) = call(&fx.app, from_fixture(include_str!("fixtures/apigw-v2-post-beacon.json"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(sink.records.lock().unwrap()[0]["event"]["client_ip"], "2001:db8:abcd::");
}

#[tokio::test]
async fn apigw_v2_gzip_base64_body_is_accepted() {
    let (fx, sink) = lambda(MemorySink::default());
    let (status, _, body) = call(&fx.app, from_fixture(include_str!("fixtures/apigw-v2-post-gzip.json"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(sink.records.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn mixed_batch_reports_rejected_by_index_and_field() {
    let (fx, sink) = lambda(MemorySink::default());
    let events = json!([
        {"event_type": "ok"},
        {"event_type": "Bad Type"},
        {"event_type": "ok", "colour": "red"},
        {"event_type": "ok", "properties": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
    ]);
    let (status, _, body) = call(&fx.app, post(events.to_string(), "application/json")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 1);
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["field"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rejected, vec![(1, "event_type".into()), (2, "colour".into()), (3, "properties.a.b.c.d.e".into())]);
    assert_eq!(sink.records.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn status_codes_for_bad_requests() {
    let (fx, sink) = lambda(MemorySink::default());
    let cases: Vec<(Request<Body>, StatusCode)> = vec![
        (post(r#"[{"event_type": "X"}]"#, "application/json"), StatusCode::BAD_REQUEST),
        (post("{nope", "application/json"), StatusCode::BAD_REQUEST),
        (post(r#"{"event_type":"a"}"#, "application/xml"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (post(vec![b' '; 1024 * 1024 + 1], "application/json"), StatusCode::PAYLOAD_TOO_LARGE),
        (
            post(format!("[{}]", vec![r#"{"event_type":"a"}"#; 501].join(",")), "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (req, want) in cases {
        let (status, headers, body) = call(&fx.app, req).await;
        assert_eq!(status, want, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    assert!(sink.records.lock().unwrap().is_empty(), "nothing stored for bad requests");
    let (status, _, body) = call(&fx.app, post(r#"[{"event_type": "X"}]"#, "application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["rejected"][0]["field"], "event_type");
}

#[tokio::test]
async fn throttling_past_budget_is_429_with_retry_after_and_unaccepted_list() {
    let (fx, _) =
        lambda(MemorySink { fail_code: Some("ProvisionedThroughputExceededException"), ..Default::default() });
    let events = json!([{"event_type": "a"}, {"event_type": "INVALID"}, {"event_type": "b"}]);
    let (status, headers, body) = call(&fx.app, post(events.to_string(), "application/json")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    let unaccepted: Vec<u64> =
        body["unaccepted"].as_array().unwrap().iter().map(|u| u["index"].as_u64().unwrap()).collect();
    assert_eq!(unaccepted, vec![0, 2]);
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"][0]["index"], 1);
}

#[tokio::test]
async fn stream_failure_is_503_without_internal_details() {
    let (fx, _) = lambda(MemorySink { fail_code: Some("InternalFailure"), ..Default::default() });
    let (status, headers, body) = call(&fx.app, post(r#"{"event_type":"a"}"#, "application/json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert!(!body.to_string().contains("InternalFailure"), "no internal details: {body}");
}

#[tokio::test]
async fn cors_preflight_and_health() {
    let (fx, _) = lambda(MemorySink::default());
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/events")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-site-key")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(&fx.app, preflight).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("x-site-key"), "{allowed}");
    let other = Request::builder()
        .method("OPTIONS")
        .uri("/events")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = call(&fx.app, other).await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    let (status, _, body) = call(&fx.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn local_server_takes_client_ip_from_trusted_forwarded_for_hop() {
    let sink: &'static MemorySink = Box::leak(Box::new(MemorySink::default()));
    let app = server_app(&config(&[("TRUSTED_PROXY_HOPS", "1"), ("LINGER_MS", "1")]), SinkRef(sink));
    let mut req = post(r#"{"event_type":"a"}"#, "application/json");
    // The client forged the first entry; our one proxy appended the real address.
    req.headers_mut().insert("x-forwarded-for", "1.2.3.4, 192.0.2.77".parse().unwrap());
    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(([10, 0, 0, 5], 4444).into()));
    let (status, _, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(sink.records.lock().unwrap()[0]["event"]["client_ip"], "192.0.2.0");

    let mut req = post(r#"{"event_type":"a"}"#, "application/json");
    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(([10, 0, 0, 5], 4444).into()));
    req.headers_mut().insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
    let untrusting = server_app(&config(&[]), SinkRef(sink));
    let (status, _, _) = call(&untrusting, req).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        sink.records.lock().unwrap()[1]["event"]["client_ip"],
        "10.0.0.0",
        "header ignored without trusted hops"
    );
}

/// One request through each front door: an API Gateway v1 event, a v2 event, the local server.
/// `headers` are set (or, with an empty value, removed) on top of the front's own.
fn through(front: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    if front == "local" {
        let mut req = Request::post("/events")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(([10, 0, 0, 5], 4444).into()));
        for (name, value) in headers {
            if !value.is_empty() {
                req.headers_mut()
                    .insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
        }
        return req;
    }
    let text = if front == "v1" {
        include_str!("fixtures/apigw-v1-post-events.json")
    } else {
        include_str!("fixtures/apigw-v2-post-beacon.json")
    };
    let mut event: Value = serde_json::from_str(text).unwrap();
    let object = event["headers"].as_object_mut().unwrap();
    object.retain(|k, _| !k.eq_ignore_ascii_case("x-site-key") && !k.eq_ignore_ascii_case("origin"));
    object.insert("content-type".into(), json!("application/json"));
    object.remove("Content-Type");
    object.remove("content-length");
    for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
        object.insert((*name).into(), json!(value));
    }
    let single = event["headers"].as_object().unwrap().clone();
    if let Some(multi) = event.get_mut("multiValueHeaders").and_then(Value::as_object_mut) {
        multi.clear();
        for (name, value) in single {
            multi.insert(name, json!([value]));
        }
    }
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    from_fixture(&event.to_string())
}

/// Invariant: keys, origins and limits are enforced identically on every request path, with a
/// JSON error that says which, and a refused request stores nothing.
#[tokio::test]
async fn sites_keys_origins_and_limits_on_every_front() {
    let one = r#"{"event_type":"a"}"#;
    let keyed = |origin: &'static str| vec![("x-site-key", "pk_test_shop"), ("origin", origin)];
    for front in ["v1", "v2", "local"] {
        let sink: &'static MemorySink = Box::leak(Box::new(MemorySink::default()));
        let app = if front == "local" {
            server_app(&config(&[("LINGER_MS", "1")]), SinkRef(sink))
        } else {
            lambda_app(&config(&[]), SinkRef(sink))
        };
        let cases = [
            (through(front, one, &[]), StatusCode::UNAUTHORIZED, "missing site key"),
            (through(front, one, &[("x-site-key", "pk_nope")]), StatusCode::UNAUTHORIZED, "unknown site key"),
            (through(front, one, &keyed("https://evil.example")), StatusCode::FORBIDDEN, "not allowed"),
            (
                through(front, r#"{"site_key":"pk_nope","events":[{"event_type":"a"}]}"#, &[]),
                StatusCode::UNAUTHORIZED,
                "unknown site key",
            ),
        ];
        for (req, want, says) in cases {
            let (status, _, body) = call(&app, req).await;
            assert_eq!(status, want, "{front}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| e.contains(says)), "{front}: {body}");
        }
        assert!(sink.records.lock().unwrap().is_empty(), "{front}: refused requests store nothing");
        let (status, _, body) = call(&app, through(front, one, &keyed("https://shop.example"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{front}: {body}");
        let envelope = r#"{"site_key":"pk_test_shop","events":[{"event_type":"a"}]}"#;
        let (status, _, body) = call(&app, through(front, envelope, &[("origin", "https://shop.example")])).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{front}: key in the body (sendBeacon): {body}");
        let records = sink.records.lock().unwrap().clone();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r["event"]["site"] == "shop"), "{front}: the site id is stamped: {records:?}");

        let tight: &'static MemorySink = Box::leak(Box::new(MemorySink::default()));
        let limited = if front == "local" {
            server_app(&config(&[("SITES_JSON", TIGHT), ("LINGER_MS", "1")]), SinkRef(tight))
        } else {
            lambda_app(&config(&[("SITES_JSON", TIGHT)]), SinkRef(tight))
        };
        let full = format!("[{}]", vec![one; 500].join(","));
        let (status, _, body) = call(&limited, through(front, &full, &keyed("https://shop.example"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{front}: one full batch fits the burst: {body}");
        let (status, headers, body) = call(&limited, through(front, one, &keyed("https://shop.example"))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{front}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("rate limit")), "{front}: {body}");
        assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(tight.records.lock().unwrap().len(), 500, "{front}: the refused event is not stored");
    }
}
