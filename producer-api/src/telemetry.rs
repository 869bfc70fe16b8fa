//! The producer's metrics: every series it reports, registered at zero at start-up.

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
