//! The stream side of the consumer's integration tests on kinesalite: streams, records, events.
//! Apart from `support` because other crates' tests include that module and link no Kinesis SDK.

#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use chrono::Utc;
use stream_consumer::testing::sample_event;

/// A new stream of `shards` shards, once ACTIVE.
pub async fn fresh_stream(client: &aws_sdk_kinesis::Client, shards: i32) -> String {
    let name = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client.create_stream().stream_name(&name).shard_count(shards).send().await.unwrap();
    wait_active(client, &name).await;
    name
}

pub async fn wait_active(client: &aws_sdk_kinesis::Client, name: &str) {
    for _ in 0..200 {
        let d = client.describe_stream_summary().stream_name(name).send().await.unwrap();
        if d.stream_description_summary().is_some_and(|s| s.stream_status().as_str() == "ACTIVE") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} not active");
}

/// Puts one record per element; returns their sequence numbers, in order.
pub async fn put(client: &aws_sdk_kinesis::Client, stream: &str, datas: Vec<Vec<u8>>) -> Vec<String> {
    let mut sequences = Vec::new();
    for chunk in datas.chunks(500) {
        let entries = chunk
            .iter()
            .map(|d| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(d.clone()))
                    .partition_key(uuid::Uuid::new_v4().to_string())
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        sequences.extend(out.records().iter().filter_map(|r| r.sequence_number().map(str::to_owned)));
    }
    sequences
}

/// `n` encoded events of one type, one per record.
pub fn events(n: usize, event_type: &str) -> Vec<Vec<u8>> {
    let now = Utc::now();
    (0..n).map(|_| schemas::encode_record(&sample_event(event_type, None, now))).collect()
}
