//! Process set-up for the producer binary: JSON logs, shutdown signals, metric registration.
//!
//! `init_tracing` and `shutdown_signal` match the consumer's; they stay a few lines in each
//! crate rather than a shared crate of their own.

/// Registers the producer's counters at zero, so rare-event series (retries, failures) exist in
/// Prometheus before their first event and dashboards show 0 rather than "no data".
pub fn register_metrics() {
    for outcome in ["accepted", "rejected", "unaccepted"] {
        metrics::counter!("producer_events_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("producer_put_records_calls_total").increment(0);
    metrics::counter!("producer_put_records_retried_records_total").increment(0);
    metrics::counter!("producer_put_records_failed_records_total").increment(0);
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

/// Completes on SIGTERM (what a container runtime and `make down` send) or Ctrl-C.
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
