//! stream-consumer entry point: configuration and clients, then Lambda, the local runner, or `migrate`.

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use metrics_exporter_prometheus::Matcher;
use stream_consumer::runner::{Runner, RunnerSettings};
use stream_consumer::sinks::dynamo::DynamoItems;
use stream_consumer::sinks::postgres::{PgLedger, connect_options};
use stream_consumer::sinks::s3::S3Lake;
use stream_consumer::{Config, Pipeline, handler_settings, lambda, s3_client, telemetry};

/// Latency buckets (seconds) for every `_seconds` histogram: 1 ms to 5 min, finer around the
/// 2 s end-to-end target so a p99 read from them says on which side of it the run fell.
const LATENCY_BUCKETS: [f64; 19] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let kept = stream_consumer::memory::keep_freed_memory();
    tracing::debug!(kept, "allocator keeps freed memory between batches");
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let secrets = matches!(config.database, stream_consumer::config::DatabaseSource::Secret { .. })
        .then(|| aws_sdk_secretsmanager::Client::new(&aws));
    let ledger = PgLedger::connect(connect_options(&config, secrets.as_ref()).await?).await?;

    if std::env::args().nth(1).as_deref() == Some("migrate") {
        ledger.migrate().await.context("applying migrations")?;
        tracing::info!("migrations applied");
        return Ok(());
    }

    let pipeline = Arc::new(Pipeline::new(
        S3Lake::new(s3_client(&aws), config.lake_bucket.clone()),
        DynamoItems::new(aws_sdk_dynamodb::Client::new(&aws), config.dynamodb_table.clone()),
        ledger,
        handler_settings(&config),
    ));

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // Metrics leave as CloudWatch Embedded Metric Format lines, flushed after each batch.
        let emf = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("WebAnalytics")
            .with_dimension("function", "stream-consumer")
            .init()
            .map_err(|e| anyhow::anyhow!("installing the EMF recorder: {e}"))?;
        telemetry::register_metrics();
        let handler = service_fn(move |event: LambdaEvent<_>| {
            let pipeline = pipeline.clone();
            async move {
                let response = lambda::handle_kinesis_event(&pipeline, event.payload).await;
                let _ = emf.flush(std::io::stdout());
                Ok::<_, lambda_runtime::Error>(response)
            }
        });
        return lambda_runtime::run(handler).await.map_err(|e| anyhow::anyhow!(e));
    }

    pipeline.ledger.migrate().await.context("applying migrations")?;
    // Explicit buckets make the `_seconds` histograms real Prometheus histograms (the
    // exporter's default is a summary), so dashboards can aggregate quantiles across series.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(config.metrics_addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .install()
        .context("starting the Prometheus endpoint")?;
    telemetry::register_metrics();
    let stream_name = config.stream_name.clone().context("STREAM_NAME is required for the local runner")?;
    let runner = Arc::new(Runner {
        pipeline,
        kinesis: aws_sdk_kinesis::Client::new(&aws),
        settings: RunnerSettings {
            stream_name,
            batch_size: config.runner_batch_size,
            batch_window: config.runner_batch_window,
            max_attempts: config.runner_max_attempts,
        },
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
