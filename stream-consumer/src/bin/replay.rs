//! `replay`: re-runs what the consumer gave up on through the same pipeline, exactly once —
//! the on-failure queue's failed-batch descriptors (re-read from Kinesis while the stream still
//! holds them) and the lake's dead-letter objects. Dry run unless `--execute`.
//!
//! Wiring only: the configuration is the consumer's (the same environment variables), the logic
//! is `stream_consumer::replay`.

// The report of what was (or would be) replayed is the command's output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use service_kit::aws::{self, Retries};
use service_kit::env::FromEnv;
use service_kit::postgres::Database;
use service_kit::s3::Bucket;
use stream_consumer::Config;
use stream_consumer::replay::{MessageOutcome, ObjectOutcome, Replayer};
use stream_consumer::sinks::postgres::POOL_MAX_CONNECTIONS;
use stream_consumer::sinks::sqs::FailureQueue;

/// Replays failed batches and dead-lettered records through the consumer's pipeline, exactly
/// once (the dedup ledger counts an event already stored as a duplicate). It reads the
/// consumer's configuration from the same environment variables (LAKE_BUCKET, DYNAMODB_TABLE,
/// DATABASE_URL or DATABASE_SECRET_ARN, ...). Without --execute nothing is written or deleted.
#[derive(Parser, Debug)]
#[command(name = "replay", version)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Replay the batches described on the on-failure queue (the event source mapping's
    /// destination, or the local runner's RUNNER_ON_FAILURE_QUEUE_URL): re-read each sequence
    /// range from Kinesis, process it, then delete the message. A range the stream no longer
    /// holds (retention passed) is reported and its message left on the queue.
    Queue {
        /// The queue's URL (Terraform output `consumer_failures_queue_url`).
        #[arg(long, env = "ON_FAILURE_QUEUE_URL")]
        queue_url: String,
        /// Process and delete; without it, only report what would be replayed.
        #[arg(long)]
        execute: bool,
        /// Most messages to handle in this run.
        #[arg(long, default_value_t = 1000)]
        max_messages: usize,
        /// Most records per pipeline batch, as the event source mapping's batch size.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
    /// Redrive the lake's dead-letter objects (after fixing what set them aside): process their
    /// records, then delete each object. Lines still undecodable go to a new dead-letter object.
    DeadLetter {
        /// Key prefix of the objects to redrive (narrow it to one day: dead-letter/dt=2026-12-07/).
        #[arg(long, default_value = "dead-letter/")]
        prefix: String,
        /// Process and delete; without it, only report what would be redriven.
        #[arg(long)]
        execute: bool,
        /// Most records per pipeline batch.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    service_kit::telemetry::init_tracing();
    let args = Args::parse();
    let config = Config::from_env()?;
    let sdk = aws::load().await;
    let secrets = config.database.needs_secret().then(|| aws::secrets_manager(&sdk, Retries::Sdk));
    let db = Database::connect(config.database.clone(), secrets, "replay", POOL_MAX_CONNECTIONS).await?;
    let pipeline = stream_consumer::aws_pipeline(&config, &sdk, db);
    let batch_size = match &args.what {
        What::Queue { batch_size, .. } | What::DeadLetter { batch_size, .. } => *batch_size,
    };
    let replayer = Replayer {
        pipeline: &pipeline,
        kinesis: aws::kinesis(&sdk, Retries::Sdk),
        lake: Bucket::new(aws::s3(&sdk, Retries::Sdk), config.lake_bucket.clone()),
        batch_size,
    };
    let failed = match args.what {
        What::Queue { queue_url, execute, max_messages, .. } => {
            let queue = FailureQueue::new(aws::sqs(&sdk, Retries::Sdk), queue_url);
            let outcomes = replayer.replay_queue(&queue, execute, max_messages).await.context("reading the queue")?;
            for o in &outcomes {
                println!("{}", describe_message(o));
            }
            println!(
                "{} message(s){}",
                outcomes.len(),
                if execute { "" } else { " (dry run: pass --execute to replay)" }
            );
            outcomes.iter().filter(|o| o.failed()).count()
        }
        What::DeadLetter { prefix, execute, .. } => {
            let outcomes =
                replayer.redrive_dead_letters(&prefix, execute).await.context("listing dead-letter objects")?;
            for o in &outcomes {
                println!("{}", describe_object(o));
            }
            println!(
                "{} object(s){}",
                outcomes.len(),
                if execute { "" } else { " (dry run: pass --execute to redrive)" }
            );
            outcomes.iter().filter(|o| o.failed()).count()
        }
    };
    if failed > 0 {
        eprintln!("replay: {failed} left in place (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_message(o: &MessageOutcome) -> String {
    match o {
        MessageOutcome::WouldReplay { batch, records } => format!(
            "would replay {} {}..{}: {records} of {} records still in the stream",
            batch.shard_id, batch.start_sequence_number, batch.end_sequence_number, batch.batch_size
        ),
        MessageOutcome::Replayed { batch, replayed } => format!(
            "replayed {} {}..{}: {} records, {} new events, {} rewritten, {} quarantined",
            batch.shard_id,
            batch.start_sequence_number,
            batch.end_sequence_number,
            replayed.records,
            replayed.new_events,
            replayed.owned_events,
            replayed.quarantined
        ),
        MessageOutcome::Failed { message_id, batch, error } => match batch {
            Some(b) => format!(
                "FAILED {} {}..{} (message {message_id}): {error}",
                b.shard_id, b.start_sequence_number, b.end_sequence_number
            ),
            None => format!("FAILED message {message_id}: {error}"),
        },
    }
}

fn describe_object(o: &ObjectOutcome) -> String {
    match o {
        ObjectOutcome::WouldRedrive { key, records, reasons } => {
            let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
            format!("would redrive {key}: {records} records ({})", reasons.join(", "))
        }
        ObjectOutcome::Redriven { key, replayed } => format!(
            "redrove {key}: {} records, {} new events, {} rewritten, {} quarantined again{}",
            replayed.records,
            replayed.new_events,
            replayed.owned_events,
            replayed.quarantined,
            if replayed.dead_letter_objects.is_empty() {
                String::new()
            } else {
                format!(" (in {})", replayed.dead_letter_objects.join(", "))
            }
        ),
        ObjectOutcome::Failed { key, error } => format!("FAILED {key}: {error}"),
    }
}
