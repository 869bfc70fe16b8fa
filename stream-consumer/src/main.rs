//! stream-consumer entry point: configuration and clients, then Lambda, the local runner, or `migrate`.

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use service_kit::aws::{self, Retries};
use service_kit::env::FromEnv;
use service_kit::postgres::{self, Database};
use service_kit::telemetry::{self, MetricsExport};
use stream_consumer::runner::{OnFailure, Runner, RunnerSettings};
use stream_consumer::sinks::postgres::POOL_MAX_CONNECTIONS;
use stream_consumer::sinks::sqs::FailureQueue;
use stream_consumer::{Config, lambda};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let kept = stream_consumer::memory::keep_freed_memory();
    tracing::debug!(kept, "allocator keeps freed memory between batches");
    let config = Config::from_env()?;
    let sdk = aws::load().await;
    let secrets = (config.database.needs_secret() || config.migrator.as_ref().is_some_and(|m| m.needs_secret()))
        .then(|| aws::secrets_manager(&sdk, Retries::Sdk));

    let db =
        Database::connect(config.database.clone(), secrets.clone(), "stream-consumer", POOL_MAX_CONNECTIONS).await?;
    // The schema before anything else, on Lambda too (at init, so a cold start that cannot
    // migrate fails its init instead of every batch), with the migrator's credentials when set;
    // when nothing is missing, one query on the application's pool says so.
    let migrate_only = std::env::args().nth(1).as_deref() == Some("migrate");
    if migrate_only || postgres::migrations_pending(db.pool()).await {
        let migrator = config.migrator.as_ref().unwrap_or(&config.database);
        postgres::migrate(migrator, Some(&config.database), secrets.as_ref(), "stream-consumer-migrate")
            .await
            .context("applying migrations")?;
    }
    if migrate_only {
        tracing::info!("migrations applied");
        return Ok(());
    }

    let pipeline = Arc::new(stream_consumer::aws_pipeline(&config, &sdk, db));

    let metrics = telemetry::install_metrics(&MetricsExport::for_process("stream-consumer", config.metrics_addr))?;
    stream_consumer::telemetry::register_metrics();
    if telemetry::on_lambda() {
        let handler = service_fn(move |event: LambdaEvent<_>| {
            let pipeline = pipeline.clone();
            async move {
                let response = lambda::handle_kinesis_event(&pipeline, event.payload).await;
                metrics.flush();
                Ok::<_, lambda_runtime::Error>(response)
            }
        });
        return lambda_runtime::run(handler).await.map_err(|e| anyhow::anyhow!(e));
    }

    let stream_name = config.stream_name.clone().context("STREAM_NAME is required for the local runner")?;
    let runner = Arc::new(Runner {
        pipeline,
        // The runner's GetRecords loop retries with its own backoff.
        kinesis: aws::kinesis(&sdk, Retries::Ours),
        settings: RunnerSettings {
            stream_name,
            batch_size: config.runner_batch_size,
            batch_max_bytes: config.runner_batch_max_bytes,
            batch_window: config.runner_batch_window,
            max_attempts: config.runner_max_attempts,
        },
        // Our give-up loop retries the queue's sends.
        on_failure: config.runner_on_failure_queue_url.clone().map(|url| {
            OnFailure::new(FailureQueue::new(aws::sqs(&sdk, Retries::Ours), url), config.runner_max_retry_attempts)
        }),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        tracing::info!("stopping after the batches in hand");
        let _ = stop.send(true);
    });
    runner.run(stopped).await?;
    Ok(())
}
