//! The consumer binary in Lambda mode, driven through the real `lambda_runtime` loop by a
//! Runtime API on loopback and fed Kinesis event fixtures.

#[path = "../../producer-api/tests/support/runtime_api.rs"]
mod runtime_api;
mod support;

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use runtime_api::{Outcome, RuntimeApi};
use serde_json::{Value, json};
use stream_consumer::testing::{SHARD, sample_event, seq};
use support::TestEnv;

/// A Kinesis event in the shape the event source mapping sends (see
/// tests/fixtures/kinesis-event.json), with our records' data.
fn kinesis_event(datas: &[Vec<u8>]) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("fixtures/kinesis-event.json")).unwrap();
    let template = event["Records"][0].clone();
    let records: Vec<Value> = datas
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut r = template.clone();
            r["kinesis"]["data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
            r["kinesis"]["sequenceNumber"] = json!(seq(i + 1));
            r["eventID"] = json!(format!("{SHARD}:{}", seq(i + 1)));
            r
        })
        .collect();
    event["Records"] = Value::Array(records);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_mode_handles_kinesis_events_and_reports_no_failures() {
    let env = TestEnv::new().await;
    let api = RuntimeApi::start().await;
    let db = format!("postgres://postgres@127.0.0.1:5432/{}", env.database);
    let _function = api.spawn_function(
        env!("CARGO_BIN_EXE_stream-consumer"),
        &[("DATABASE_URL", db), ("LAKE_BUCKET", env.bucket.clone()), ("DYNAMODB_TABLE", env.table.clone())],
    );
    let now = Utc::now();
    let mut datas: Vec<Vec<u8>> =
        (0..20).map(|_| schemas::encode_record(&sample_event("page_view", None, now))).collect();
    datas.push(b"poison".to_vec());
    let event = kinesis_event(&datas);

    for round in 0..2 {
        let id = api.invoke(event.clone());
        match api.outcome(&id, Duration::from_secs(60)).await {
            Outcome::Response(r) => assert_eq!(r, json!({"batchItemFailures": []}), "round {round}"),
            Outcome::Error(e) => panic!("function error: {e}"),
        }
    }
    // Delivered twice, stored once.
    assert_eq!(env.lake_event_ids().await.len(), 20);
    assert_eq!(env.dynamo_count().await, 20);
    assert_eq!(env.counts().await["page_view"], 20);
    assert_eq!(env.keys("dead-letter/").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_mode_reports_the_first_record_when_a_sink_fails() {
    let env = TestEnv::new().await;
    let api = RuntimeApi::start().await;
    let db = format!("postgres://postgres@127.0.0.1:5432/{}", env.database);
    let _function = api.spawn_function(
        env!("CARGO_BIN_EXE_stream-consumer"),
        &[
            ("DATABASE_URL", db),
            ("LAKE_BUCKET", "no-such-bucket-for-this-test".into()),
            ("DYNAMODB_TABLE", env.table.clone()),
            ("SINK_BUDGET_MS", "1000".into()),
        ],
    );
    let now = Utc::now();
    let datas: Vec<Vec<u8>> = (0..3).map(|_| schemas::encode_record(&sample_event("a", None, now))).collect();
    let id = api.invoke(kinesis_event(&datas));
    match api.outcome(&id, Duration::from_secs(60)).await {
        Outcome::Response(r) => assert_eq!(r, json!({"batchItemFailures": [{"itemIdentifier": seq(1)}]})),
        Outcome::Error(e) => panic!("function error: {e}"),
    }
}
