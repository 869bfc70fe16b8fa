//! producer-api entry point: configuration, clients, then Lambda or the local server.

use anyhow::Context;
use metrics_exporter_prometheus::Matcher;
use producer_api::kinesis::KinesisSink;
use producer_api::{Config, server, telemetry};

/// Latency buckets (seconds) for every `_seconds` histogram: 1 ms to 5 min.
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init_tracing();
    let aws = aws_config::load_from_env().await;
    let sink = KinesisSink::new(aws_sdk_kinesis::Client::new(&aws), config.stream_name.clone());

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // On Lambda metrics leave as CloudWatch Embedded Metric Format lines on stdout, flushed
        // after every invocation: no PutMetricData calls, no extra latency.
        let emf = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("WebAnalytics")
            .with_dimension("function", "producer-api")
            .init()
            .map_err(|e| anyhow::anyhow!("installing the EMF recorder: {e}"))?;
        telemetry::register_metrics();
        let app = server::lambda_app(&config, sink).layer(axum::middleware::map_response(
            move |response: axum::response::Response| async move {
                let _ = emf.flush(std::io::stdout());
                response
            },
        ));
        return lambda_http::run(app).await.map_err(|e| anyhow::anyhow!(e));
    }

    // Explicit buckets make the `_seconds` histograms real Prometheus histograms (the
    // exporter's default is a summary), so dashboards can aggregate quantiles across series.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(config.metrics_addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .install()
        .context("starting the Prometheus endpoint")?;
    telemetry::register_metrics();
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("binding {}", config.bind_addr))?;
    tracing::info!(addr = %config.bind_addr, stream = %config.stream_name, "producer listening");
    let timeouts = server::ConnectionTimeouts::from_config(&config);
    server::serve_with_timeouts(listener, server::server_app(&config, sink), timeouts, telemetry::shutdown_signal())
        .await?;
    Ok(())
}
