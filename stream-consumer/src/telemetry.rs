//! The consumer's metrics: every series it reports, registered at zero at start-up.

/// Every quarantine reason the consumer can report (see `schemas::DecodeError::reason_code`,
/// plus `batch_failed` for batches dead-lettered by the local runner).
pub const QUARANTINE_REASONS: [&str; 8] = [
    "too_large",
    "invalid_utf8",
    "not_json",
    "missing_version",
    "unknown_version",
    "malformed_envelope",
    "invalid_event",
    "batch_failed",
];

/// Registers the consumer's counters at zero, so rare-event series (quarantine reasons,
/// DynamoDB retries) exist before their first event and dashboards show 0, not "no data".
pub fn register_metrics() {
    for reason in QUARANTINE_REASONS {
        metrics::counter!("consumer_quarantined_total", "reason" => reason).increment(0);
    }
    for scope in ["batch", "window"] {
        metrics::counter!("consumer_duplicates_total", "scope" => scope).increment(0);
    }
    for outcome in ["ok", "failed"] {
        metrics::counter!("consumer_batches_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("consumer_dynamodb_unprocessed_retries_total").increment(0);
    metrics::counter!("consumer_events_stored_total").increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: every reason the decoder can report is pre-registered.
    #[test]
    fn every_decode_reason_is_registered() {
        let samples: Vec<&[u8]> = vec![b"x", &[0xff], b"[]", b"{}", br#"{"v":9}"#];
        for bytes in samples {
            let code = schemas::decode_record(bytes).unwrap_err().reason_code();
            assert!(QUARANTINE_REASONS.contains(&code), "{code}");
        }
    }
}
