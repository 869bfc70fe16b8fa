//! Kinesis helpers for tests: a fresh stream per test and reading every record back.

#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;

pub async fn client() -> Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_KINESIS").is_some(),
        "integration tests need the local stack: run `make test` (or `make up` and `source scripts/env.sh`)"
    );
    Client::new(&aws_config::load_from_env().await)
}

/// Creates a uniquely named stream and waits until it is active.
pub async fn fresh_stream(client: &Client, shards: i32) -> String {
    let name = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client.create_stream().stream_name(&name).shard_count(shards).send().await.expect("create stream");
    for _ in 0..200 {
        let d = client.describe_stream_summary().stream_name(&name).send().await.unwrap();
        if d.stream_description_summary().map(|s| s.stream_status().as_str() == "ACTIVE").unwrap_or(false) {
            return name;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become active");
}

/// Every record's data on every shard, from the start.
pub async fn read_all(client: &Client, stream: &str) -> Vec<Vec<u8>> {
    let shards = client.list_shards().stream_name(stream).send().await.unwrap();
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let r = client.get_records().shard_iterator(&it).limit(10_000).send().await.unwrap();
            out.extend(r.records().iter().map(|rec| rec.data().as_ref().to_vec()));
            match r.next_shard_iterator() {
                Some(next) if !r.records().is_empty() || r.millis_behind_latest().unwrap_or(0) > 0 => {
                    it = next.to_owned()
                }
                _ => break,
            }
        }
    }
    out
}

/// Every event on the stream, from the start: each record split into the events it packs.
pub async fn read_events(client: &Client, stream: &str) -> Vec<Vec<u8>> {
    read_all(client, stream).await.iter().flat_map(|r| schemas::record_events(r).map(<[u8]>::to_vec)).collect()
}
