//! Logs, shutdown and metrics export, the same for every binary.
//!
//! Metrics go through the `metrics` facade. Locally they are served on a Prometheus endpoint
//! with explicit latency buckets; on Lambda they leave as CloudWatch Embedded Metric Format
//! lines on stdout, flushed after every invocation (no `PutMetricData` calls, no added latency).

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::KitError;

/// The CloudWatch namespace of every metric the binaries emit on Lambda.
pub const EMF_NAMESPACE: &str = "WebAnalytics";

/// Latency buckets (seconds) for every `_seconds` histogram: 1 ms to 5 min, finer around the
/// 2 s end-to-end target so a p99 read from them says on which side of it a run fell.
pub const LATENCY_BUCKETS: [f64; 19] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Whether this process runs under a Lambda runtime (the runtime API address is set).
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// JSON log lines (or plain text with `LOG_FORMAT=text`), filtered by `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "text") {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// Completes on SIGTERM (what Lambda, systemd and `make down` send) or Ctrl-C.
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Where a process's metrics go.
#[derive(Debug, Clone)]
pub enum MetricsExport {
    /// A Prometheus endpoint on this address (the local stack).
    Prometheus(SocketAddr),
    /// EMF lines on stdout in [`EMF_NAMESPACE`], with dimension `function` (Lambda).
    Emf { function: &'static str },
}

impl MetricsExport {
    /// EMF on Lambda, Prometheus on `local_addr` elsewhere.
    pub fn for_process(function: &'static str, local_addr: SocketAddr) -> Self {
        if on_lambda() { MetricsExport::Emf { function } } else { MetricsExport::Prometheus(local_addr) }
    }
}

/// The installed exporter. [`Metrics::flush`] writes the EMF lines gathered since the last
/// flush (call it once per invocation); Prometheus is scraped, so there it does nothing.
#[derive(Clone, Copy)]
pub struct Metrics {
    emf: Option<&'static metrics_cloudwatch_embedded::Collector>,
}

impl Metrics {
    pub fn flush(&self) {
        if let Some(emf) = self.emf
            && let Err(e) = emf.flush(std::io::stdout())
        {
            tracing::warn!(error = %e, "writing EMF metrics failed");
        }
    }
}

/// Installs the global metrics recorder. Explicit buckets make the `_seconds` histograms real
/// Prometheus histograms (the exporter's default is a summary), so dashboards can aggregate
/// quantiles across series.
pub fn install_metrics(export: &MetricsExport) -> Result<Metrics, KitError> {
    match export {
        MetricsExport::Prometheus(addr) => {
            PrometheusBuilder::new()
                .with_http_listener(*addr)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .map_err(|e| KitError::Metrics(e.to_string()))?
                .install()
                .map_err(|e| KitError::Metrics(format!("Prometheus endpoint on {addr}: {e}")))?;
            Ok(Metrics { emf: None })
        }
        MetricsExport::Emf { function } => {
            let emf = metrics_cloudwatch_embedded::Builder::new()
                .cloudwatch_namespace(EMF_NAMESPACE)
                .with_dimension("function", *function)
                .init()
                .map_err(|e| KitError::Metrics(format!("EMF recorder: {e}")))?;
            Ok(Metrics { emf: Some(emf) })
        }
    }
}
