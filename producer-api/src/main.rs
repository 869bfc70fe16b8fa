//! producer-api entry point: configuration, clients, then Lambda or the local server.

use anyhow::Context;
use producer_api::kinesis::KinesisSink;
use producer_api::{Config, server, telemetry};
use service_kit::aws::{self, Retries};
use service_kit::env::FromEnv;
use service_kit::telemetry::{self as kit, MetricsExport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Compiled once, before anything else: a plan that does not compile stops the start-up here
    // with its file named (the request path then reuses the compiled plans).
    producer_api::tracking_plan::TrackingPlans::embedded()?;
    let config = Config::from_env()?;
    kit::init_tracing();
    tracing::info!("{}", config.intake.countries.describe());
    let sdk = aws::load().await;
    // `publish_with_retry` resends only the failed records, within the request's budget; SDK
    // retries inside it would resend whole calls and overrun the budget.
    let sink = KinesisSink::new(aws::kinesis(&sdk, Retries::Ours), config.stream_name.clone());
    let metrics = kit::install_metrics(&MetricsExport::for_process("producer-api", config.metrics_addr))?;
    telemetry::register_metrics();

    if kit::on_lambda() {
        let app = server::lambda_app(&config, sink).layer(axum::middleware::map_response(
            move |response: axum::response::Response| async move {
                metrics.flush();
                response
            },
        ));
        return lambda_http::run(app).await.map_err(|e| anyhow::anyhow!(e));
    }

    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("binding {}", config.bind_addr))?;
    tracing::info!(addr = %config.bind_addr, stream = %config.stream_name, "producer listening");
    let timeouts = server::ConnectionTimeouts::from_config(&config);
    server::serve_with_timeouts(listener, server::server_app(&config, sink), timeouts, kit::shutdown_signal()).await?;
    Ok(())
}
