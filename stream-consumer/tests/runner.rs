//! The local runner against kinesalite: polls every shard, checkpoints after success, resumes
//! from its checkpoint after a restart, and follows a split to the child shards.

mod stream;
mod support;

use std::sync::Arc;
use std::time::Duration;

use stream::{events, fresh_stream, put, wait_active};
use stream_consumer::runner::{Runner, RunnerSettings};
use support::TestEnv;

fn start(env: &TestEnv, stream: &str) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let runner = Arc::new(Runner {
        pipeline: Arc::new(env.pipeline()),
        kinesis: service_kit::aws::kinesis(&env.aws, service_kit::aws::Retries::Ours),
        settings: RunnerSettings {
            stream_name: stream.to_owned(),
            batch_size: 1000,
            batch_max_bytes: 4 << 20,
            batch_window: Duration::from_millis(200),
            max_attempts: 3,
        },
        on_failure: None,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { runner.run(stopped).await.unwrap() });
    (stop, handle)
}

async fn wait_for_count(env: &TestEnv, want: i64) {
    for _ in 0..300 {
        if env.counts().await.values().sum::<i64>() >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("counts never reached {want}: {:?}", env.counts().await);
}

/// Invariant: the runner drains every shard, survives a restart without reprocessing, and
/// quarantines poison records without blocking their shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_drains_shards_and_resumes_from_checkpoint() {
    let env = TestEnv::new().await;
    let kinesis = service_kit::aws::kinesis(&env.aws, service_kit::aws::Retries::Ours);
    let stream = fresh_stream(&kinesis, 2).await;
    let mut first = events(1500, "page_view");
    first.push(b"poison".to_vec());
    put(&kinesis, &stream, first).await;

    let (stop, handle) = start(&env, &stream);
    wait_for_count(&env, 1500).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), handle).await.expect("stops on request").unwrap();

    put(&kinesis, &stream, events(300, "click")).await;
    let (stop, handle) = start(&env, &stream);
    wait_for_count(&env, 1800).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    let counts = env.counts().await;
    assert_eq!(counts["page_view"], 1500);
    assert_eq!(counts["click"], 300);
    assert_eq!(env.dynamo_count().await, 1800);
    assert_eq!(env.lake_event_ids().await.len(), 1800, "restart did not reprocess");
    assert_eq!(env.keys("dead-letter/").await.len(), 1);
}

/// Invariant: records that pack many events (as the producer writes them) land every event
/// once, beside records of one event (as written before packing), and a bad line in a packed
/// record is quarantined alone while its neighbours land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_lands_every_event_of_packed_records() {
    let env = TestEnv::new().await;
    let kinesis = service_kit::aws::kinesis(&env.aws, service_kit::aws::Retries::Ours);
    let stream = fresh_stream(&kinesis, 2).await;
    let separator = [schemas::EVENT_SEPARATOR];
    let mut datas: Vec<Vec<u8>> = (0..30).map(|_| events(50, "page_view").join(&separator[..])).collect();
    let mut with_poison = events(20, "click");
    with_poison.insert(7, b"poison".to_vec());
    datas.push(with_poison.join(&separator[..]));
    datas.extend(events(25, "signup"));
    put(&kinesis, &stream, datas).await;

    let (stop, handle) = start(&env, &stream);
    wait_for_count(&env, 1545).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    let counts = env.counts().await;
    assert_eq!((counts["page_view"], counts["click"], counts["signup"]), (1500, 20, 25));
    assert_eq!(env.dynamo_count().await, 1545);
    assert_eq!(env.lake_event_ids().await.len(), 1545);
    let dead = env.keys("dead-letter/").await;
    assert_eq!(dead.len(), 1);
    let body = env.object(&dead[0]).await;
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&body).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "only the bad line: {rows:?}");
    assert_eq!(rows[0]["line"], 7);
    assert_eq!(rows[0]["payload_base64"], "cG9pc29u");
}

/// Invariant: after a shard split the runner finishes the parent, then follows the children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_follows_a_split_to_the_children() {
    let env = TestEnv::new().await;
    let kinesis = service_kit::aws::kinesis(&env.aws, service_kit::aws::Retries::Ours);
    let stream = fresh_stream(&kinesis, 1).await;
    put(&kinesis, &stream, events(400, "before_split")).await;
    let (stop, handle) = start(&env, &stream);
    wait_for_count(&env, 400).await;

    let shards = kinesis.list_shards().stream_name(&stream).send().await.unwrap();
    let parent = &shards.shards()[0];
    let start_hash: u128 = parent.hash_key_range().unwrap().starting_hash_key().parse().unwrap();
    let end_hash: u128 = parent.hash_key_range().unwrap().ending_hash_key().parse().unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key(((start_hash + end_hash) / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, &stream).await;
    put(&kinesis, &stream, events(600, "after_split")).await;
    wait_for_count(&env, 1000).await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    let counts = env.counts().await;
    assert_eq!(counts["before_split"], 400);
    assert_eq!(counts["after_split"], 600);
    assert_eq!(env.lake_event_ids().await.len(), 1000);
}
