//! The producer binary in Lambda mode, driven through the real `lambda_runtime` loop by a
//! Runtime API on loopback, fed API Gateway v1 and v2 events.

#[path = "support/kinesis.rs"]
mod kinesis;
#[path = "support/runtime_api.rs"]
mod runtime_api;

use std::time::Duration;

use runtime_api::{Outcome, RuntimeApi};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_mode_answers_apigw_v1_and_v2_events_and_puts_records() {
    let client = kinesis::client().await;
    let stream = kinesis::fresh_stream(&client, 1).await;
    let api = RuntimeApi::start().await;
    // The site the fixtures carry (key header or body envelope, origin https://shop.example).
    let sites = r#"{"sites": [{"id": "shop", "key": "pk_test_shop", "allowed_origins": ["https://shop.example"],
        "events_per_second": 1000, "burst": 1000, "per_ip_events_per_second": 1000, "per_ip_burst": 1000}]}"#;
    let function = api.spawn_function(
        env!("CARGO_BIN_EXE_producer-api"),
        &[("STREAM_NAME", stream.clone()), ("SITES_JSON", sites.to_owned())],
    );

    let v1: Value = serde_json::from_str(include_str!("fixtures/apigw-v1-post-events.json")).unwrap();
    let v2: Value = serde_json::from_str(include_str!("fixtures/apigw-v2-post-beacon.json")).unwrap();
    let gz: Value = serde_json::from_str(include_str!("fixtures/apigw-v2-post-gzip.json")).unwrap();
    let mut bad = v2.clone();
    bad["body"] = Value::String("{not json".into());
    let mut keyless = v1.clone();
    keyless["headers"].as_object_mut().unwrap().remove("X-Site-Key");
    keyless["multiValueHeaders"].as_object_mut().unwrap().remove("X-Site-Key");
    let mut foreign = gz.clone();
    foreign["headers"]["origin"] = Value::String("https://evil.example".into());
    let mut expected = Vec::new();
    let cases = [(v1, 202, 2), (v2, 202, 1), (gz, 202, 2), (bad, 400, 0), (keyless, 401, 0), (foreign, 403, 0)];
    for (event, status, accepted) in cases {
        let id = api.invoke(event);
        match api.outcome(&id, Duration::from_secs(30)).await {
            Outcome::Response(r) => {
                assert_eq!(r["statusCode"], status, "{r}");
                let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                if status == 202 {
                    assert_eq!(body["accepted"], accepted, "{body}");
                }
                expected.push(accepted);
            }
            Outcome::Error(e) => panic!("function error: {e}"),
        }
    }
    // One record per request on Lambda: a request's events are packed together.
    let on_stream = kinesis::read_all(&client, &stream).await;
    assert_eq!(on_stream.len(), expected.iter().filter(|&&n| n > 0).count());
    let events: usize = on_stream.iter().map(|r| schemas::record_events(r).count()).sum();
    assert_eq!(events, expected.iter().sum::<usize>());

    // Metrics leave as CloudWatch EMF documents on stdout, one flush per invocation.
    let emf: Vec<Value> = function
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert!(!emf.is_empty(), "no EMF lines on stdout");
    let names: Vec<String> = emf
        .iter()
        .flat_map(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["Name"].as_str().map(str::to_owned))
        .collect();
    assert!(names.iter().any(|n| n == "producer_requests_total"), "{names:?}");
    assert!(!function.stdout_lines().iter().any(|l| l.contains("198.51.100.23")), "the client IP is never logged");
}
