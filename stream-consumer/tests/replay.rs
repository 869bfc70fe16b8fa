//! `replay` against the local stack (kinesalite, dynalite, moto's S3 and SQS, PostgreSQL): the
//! runner gives up on batches while PostgreSQL (behind a proxy the test cuts) or DynamoDB is
//! down and describes them on an SQS on-failure queue, as the event source mapping does on AWS;
//! `replay` — the binary itself — re-reads them from the stream once the store is back and lands
//! them exactly once. Dead-letter objects are redriven the same way.

mod stream;
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use service_kit::aws::{self, Retries};
use service_kit::s3::Bucket;
use stream::{events, fresh_stream, put};
use stream_consumer::decode::InputRecord;
use stream_consumer::replay::{MessageOutcome, ObjectOutcome, Replayer, parse_on_failure};
use stream_consumer::runner::{OnFailure, Runner, RunnerSettings};
use stream_consumer::sinks::dynamo::DynamoItems;
use stream_consumer::sinks::postgres::PgLedger;
use stream_consumer::sinks::s3::S3Lake;
use stream_consumer::sinks::sqs::FailureQueue;
use stream_consumer::testing::{event_record, raw_record};
use stream_consumer::{HandlerSettings, Pipeline};
use support::TestEnv;

/// A new, empty queue on the local SQS (moto).
async fn fresh_queue(env: &TestEnv) -> FailureQueue {
    let sqs = aws::sqs(&env.aws, Retries::Sdk);
    let name = format!("test-failures-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let out = sqs.create_queue().queue_name(name).send().await.expect("create queue");
    FailureQueue::new(sqs, out.queue_url().expect("queue URL").to_owned())
}

/// Every message now on the queue (their bodies), each made visible again at once.
async fn peek(queue: &FailureQueue) -> Vec<String> {
    let messages = queue.receive(30).await.unwrap();
    for m in &messages {
        queue.release(m).await.unwrap();
    }
    messages.into_iter().map(|m| m.body).collect()
}

/// Puts 250 events and runs the runner, with an on-failure queue and one retry, while DynamoDB
/// is down (nothing listens on port 9; a short sink budget keeps each attempt brief), until the
/// shard has moved past every record. Returns the records' sequence numbers.
async fn run_with_dynamodb_down(
    env: &TestEnv,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    queue: &FailureQueue,
) -> Vec<String> {
    let shard = "shardId-000000000000";
    let down = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&env.aws)
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let settings = HandlerSettings { sink_budget: Duration::from_millis(300), ..support::settings() };
    let broken = Pipeline::new(
        S3Lake::new(env.s3.clone(), env.bucket.clone()),
        DynamoItems::new(down, env.table.clone()),
        env.ledger.clone(),
        settings,
    );
    let runner = Arc::new(Runner {
        pipeline: Arc::new(broken),
        kinesis: kinesis.clone(),
        settings: RunnerSettings {
            stream_name: stream.to_owned(),
            batch_size: 100,
            batch_max_bytes: 4 << 20,
            batch_window: Duration::from_millis(200),
            max_attempts: 3,
        },
        on_failure: Some(OnFailure::new(queue.clone(), 1)),
    });
    let sequences = put(kinesis, stream, events(250, "page_view")).await;
    let last = sequences.last().unwrap().clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run(stopped).await.unwrap() }
    });
    // The shard moves on past every batch it gave up on.
    for _ in 0..600 {
        if env.ledger.checkpoint(stream, shard).await.unwrap().0.as_deref() == Some(last.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running).await.expect("stops on request").unwrap();
    assert_eq!(env.ledger.checkpoint(stream, shard).await.unwrap().0.as_deref(), Some(last.as_str()));

    sequences
}

/// Invariant: batches that fail every retry while a store is down are described on the
/// on-failure queue and skipped; `replay queue` reports them in a dry run without touching them,
/// and with `--execute` lands every event exactly once and deletes the messages; a descriptor
/// replayed a second time adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_given_up_in_an_outage_replay_exactly_once() {
    let env = TestEnv::new().await;
    let kinesis = aws::kinesis(&env.aws, Retries::Ours);
    let stream = fresh_stream(&kinesis, 1).await;
    let queue = fresh_queue(&env).await;

    let sequences = run_with_dynamodb_down(&env, &kinesis, &stream, &queue).await;
    let shard = "shardId-000000000000";

    let bodies = peek(&queue).await;
    let described: Vec<_> = bodies.iter().map(|b| parse_on_failure(b).expect("an on-failure record")).collect();
    assert!(!described.is_empty(), "no descriptor on the queue");
    assert_eq!(described.iter().map(|b| b.batch_size).sum::<u64>(), 250, "every record is in one descriptor");
    assert!(sequences.iter().all(|s| described.iter().filter(|b| b.contains(s)).count() == 1));
    assert!(described.iter().all(|b| b.stream_name().unwrap() == stream && b.shard_id == shard));
    assert_eq!(env.dynamo_count().await, 0, "DynamoDB was down");

    // Dry run, through the library: reports, changes nothing.
    let replayer = Replayer {
        pipeline: &env.pipeline(),
        kinesis: aws::kinesis(&env.aws, Retries::Sdk),
        lake: Bucket::new(env.s3.clone(), env.bucket.clone()),
        batch_size: 100,
    };
    let dry = replayer.replay_queue(&queue, false, 100).await.unwrap();
    assert_eq!(dry.len(), described.len());
    assert!(
        dry.iter().all(
            |o| matches!(o, MessageOutcome::WouldReplay { batch, records } if *records as u64 == batch.batch_size)
        )
    );
    assert_eq!(peek(&queue).await.len(), described.len(), "a dry run leaves the messages");
    assert_eq!(env.dynamo_count().await, 0, "a dry run writes nothing");

    // The binary, as an operator runs it, with the consumer's environment.
    let out = replay_command(&env, &queue).arg("--execute").output().expect("run replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "replay failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("replayed shardId").count(), described.len(), "{stdout}");
    assert!(peek(&queue).await.is_empty(), "replayed messages are deleted");
    assert_exact(&env, 250).await;

    // The same descriptor again (a redelivered message, a second operator): nothing more.
    queue.send(bodies[0].clone()).await.unwrap();
    let again = replayer.replay_queue(&queue, true, 100).await.unwrap();
    assert!(matches!(&again[..], [MessageOutcome::Replayed { replayed, .. }] if replayed.new_events == 0));
    assert_exact(&env, 250).await;

    // A range the stream does not hold is reported and its message kept for the operator.
    let mut gone = described[0].clone();
    gone.start_sequence_number = "1".into();
    gone.end_sequence_number = "2".into();
    queue.send(stream_consumer::replay::on_failure_record(&gone, 6, "test", chrono::Utc::now())).await.unwrap();
    let failed = replayer.replay_queue(&queue, true, 100).await.unwrap();
    assert!(matches!(&failed[..], [o] if o.failed()), "{failed:?}");
    assert_eq!(peek(&queue).await.len(), 1, "a failed replay leaves its message");
    assert_exact(&env, 250).await;
}

/// Every store holds exactly `n` events of the test: counted once, one item each, one lake row each.
async fn assert_exact(env: &TestEnv, n: usize) {
    assert_eq!(env.counts().await.values().sum::<i64>(), n as i64, "PostgreSQL counts");
    assert_eq!(env.dynamo_count().await, n, "DynamoDB items");
    let mut ids = env.lake_event_ids().await;
    assert_eq!(ids.len(), n, "lake rows");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "lake rows are distinct events");
}

/// Invariant: a dead-lettered batch is redriven exactly once — its events land, the object is
/// deleted, a line that is still bad is set aside again (and not lost), and redriving the same
/// object a second time adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_objects_redrive_exactly_once() {
    let env = TestEnv::new().await;
    let pipeline = env.pipeline();
    let mut records: Vec<InputRecord> =
        (1..=40).map(|i| event_record(&format!("{}", 1000 + i), "signup", None)).collect();
    records.push(raw_record("1041", b"still not json"));
    pipeline.dead_letter_batch(&records, "batch failed 5 times: test").await.unwrap();
    let keys = env.keys("dead-letter/").await;
    assert_eq!(keys.len(), 1);
    let original = env.object(&keys[0]).await;

    let replayer = Replayer {
        pipeline: &pipeline,
        kinesis: aws::kinesis(&env.aws, Retries::Sdk),
        lake: Bucket::new(env.s3.clone(), env.bucket.clone()),
        batch_size: 500,
    };
    let dry = replayer.redrive_dead_letters("dead-letter/", false).await.unwrap();
    assert!(
        matches!(&dry[..], [ObjectOutcome::WouldRedrive { records: 41, reasons, .. }] if reasons["batch_failed"] == 41),
        "{dry:?}"
    );
    assert_eq!(env.counts().await.values().sum::<i64>(), 0, "a dry run writes nothing");

    let done = replayer.redrive_dead_letters("dead-letter/", true).await.unwrap();
    let [ObjectOutcome::Redriven { replayed, .. }] = &done[..] else { panic!("{done:?}") };
    assert_eq!((replayed.records, replayed.new_events, replayed.quarantined), (41, 40, 1));
    assert_exact(&env, 40).await;
    // The bad line is in the lake's dead-letter prefix still, alone.
    let left = env.keys("dead-letter/").await;
    assert_eq!(left.len(), 1, "{left:?}");
    let (rest, reasons) = stream_consumer::replay::dead_letter_records(&env.object(&left[0]).await).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].data.as_ref(), b"still not json");
    assert_ne!(reasons, ["batch_failed"], "set aside now for what is wrong with it");

    // The original object back (a restore, a second operator): nothing is counted twice.
    let key = "dead-letter/restored.ndjson";
    Bucket::new(env.s3.clone(), env.bucket.clone()).put(key, original, "application/x-ndjson").await.unwrap();
    let again = replayer.redrive_dead_letters(key, true).await.unwrap();
    assert!(matches!(&again[..], [ObjectOutcome::Redriven { replayed, .. }] if replayed.new_events == 0), "{again:?}");
    assert_exact(&env, 40).await;
    assert!(!env.keys(key).await.contains(&key.to_owned()), "a redriven object is deleted");
}

/// Invariant (the scenario of issue #22): PostgreSQL stops long enough for batches to exhaust
/// their retries; the runner describes them on the on-failure queue and moves on, as the event
/// source mapping does (its checkpoint is saved once PostgreSQL is back, past them); the batches
/// after the outage land as usual; `replay` lands the ones given up on, and every store holds
/// each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_given_up_while_postgres_is_down_replay_exactly_once() {
    let env = TestEnv::new().await;
    let kinesis = aws::kinesis(&env.aws, Retries::Ours);
    let stream = fresh_stream(&kinesis, 1).await;
    let queue = fresh_queue(&env).await;
    let outage = Outage::start().await;
    // The runner's ledger (claims, counts, checkpoints) reaches PostgreSQL only through the proxy.
    let url = support::database_url(&env.database).replace(":5432/", &format!(":{}/", outage.port));
    let pipeline = Pipeline::new(
        S3Lake::new(env.s3.clone(), env.bucket.clone()),
        env.dynamo_items(),
        PgLedger::connect(url.parse().expect("a database URL")),
        support::settings(),
    );
    let runner = Arc::new(Runner {
        pipeline: Arc::new(pipeline),
        kinesis: kinesis.clone(),
        settings: RunnerSettings {
            stream_name: stream.clone(),
            batch_size: 100,
            batch_max_bytes: 4 << 20,
            batch_window: Duration::from_millis(200),
            max_attempts: 3,
        },
        on_failure: Some(OnFailure::new(queue.clone(), 1)),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { runner.run(stopped).await.unwrap() });

    put(&kinesis, &stream, events(100, "page_view")).await;
    wait_until("the first events are counted", || async { total(&env).await == 100 }).await;
    outage.set_down(true);
    let during = put(&kinesis, &stream, events(150, "click")).await;
    wait_until("every record of the outage is described on the queue", || async {
        let described: Vec<_> = peek(&queue).await.iter().filter_map(|b| parse_on_failure(b).ok()).collect();
        during.iter().all(|s| described.iter().any(|b| b.contains(s)))
    })
    .await;
    outage.set_down(false);
    let after = put(&kinesis, &stream, events(50, "signup")).await;
    let last = after.last().unwrap().clone();
    wait_until("the shard is checkpointed past the outage", || async {
        env.ledger.checkpoint(&stream, "shardId-000000000000").await.unwrap().0.as_deref() == Some(last.as_str())
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running).await.expect("stops on request").unwrap();
    let counts = env.counts().await;
    assert_eq!((counts.get("page_view"), counts.get("signup"), counts.get("click")), (Some(&100), Some(&50), None));

    let out = replay_command(&env, &queue).arg("--execute").output().expect("run replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(peek(&queue).await.is_empty(), "replayed messages are deleted");
    assert_eq!(env.counts().await.get("click"), Some(&150));
    assert_exact(&env, 300).await;
}

/// The `replay queue` command on `queue`, with the consumer's environment for `env`'s stores.
fn replay_command(env: &TestEnv, queue: &FailureQueue) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_replay"));
    command
        .args(["queue", "--batch-size", "100"])
        .env("LAKE_BUCKET", &env.bucket)
        .env("DYNAMODB_TABLE", &env.table)
        .env("DATABASE_URL", support::database_url(&env.database))
        .env_remove("DATABASE_SECRET_ARN")
        .env("ON_FAILURE_QUEUE_URL", queue.url());
    command
}

/// Events counted in PostgreSQL, over every type.
async fn total(env: &TestEnv) -> i64 {
    env.counts().await.values().sum()
}

/// Polls `done` every 100 ms for up to 60 s; fails the test with `what` when it never holds.
async fn wait_until<F: Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A TCP proxy in front of the local PostgreSQL that a test cuts and restores: PostgreSQL goes
/// down for the one process connected through it (its connections drop, new ones are refused),
/// while the server, and every other test, carries on.
struct Outage {
    port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl Outage {
    async fn start() -> Outage {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // refused: dropped at once
                }
                let Ok(server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else { continue };
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = pipe(&client, &server) => {}
                        () = pipe(&server, &client) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Outage { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// Copies bytes from `from` to `to` until either side closes (tokio's `net` calls only).
async fn pipe(from: &tokio::net::TcpStream, to: &tokio::net::TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}
