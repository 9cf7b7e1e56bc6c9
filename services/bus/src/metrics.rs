//! Prometheus metric names: the one place that names them, like [`crate::subjects`] names
//! subjects. Services record through the `metrics` facade; the process's exporter
//! (`gateway::ops`) renders them at `/metrics`. Dashboards and alert rules in
//! `deploy/monitoring/` use exactly these names.

/// Counter: HTTP requests answered, by `route` (the matched route), `method` and `status`.
pub const HTTP_REQUESTS: &str = "leerspoor_http_requests_total";
/// Histogram: seconds from request to response, by `route` and `method`.
pub const HTTP_SECONDS: &str = "leerspoor_http_request_duration_seconds";
/// Counter: statement writes (PUT and POST requests) the gateway sent to `LRS_IN`, by `sent`:
/// `alone` (a message of its own) or `bundled` (in one message with others, see
/// [`crate::PARTS_HEADER`]).
pub const STATEMENT_WRITES: &str = "leerspoor_gateway_statement_writes_total";
/// Counter: reads the gateway asked of the store or the projector, by `service` (`store`,
/// `projector`) and `via`: `process` (answered by the one in the gateway's own process,
/// `leerspoor serve`) or `nats` (asked of the queue group: a gateway alone, or one whose store
/// had not applied what the read needed; see [`crate::request::ask_here_first`]).
pub const READS: &str = "leerspoor_gateway_reads_total";
/// Counter: statements the store accepted, by `source` (`http`, `hub.<hub>`, `admin.import`).
pub const STATEMENTS_ACCEPTED: &str = "leerspoor_statements_accepted_total";
/// Counter: statements the store refused (invalid, conflicting), by `source`.
pub const STATEMENTS_REJECTED: &str = "leerspoor_statements_rejected_total";
/// Histogram: seconds the store took to apply one `LRS_IN` message (before the flush).
pub const STORE_APPLY_SECONDS: &str = "leerspoor_store_apply_seconds";
/// Histogram: seconds the store took to flush a batch to disk.
pub const STORE_FLUSH_SECONDS: &str = "leerspoor_store_flush_seconds";
/// Histogram: seconds the store waited before a pull of `LRS_IN` for the projector beside it
/// ([`crate::pace`]); only the pulls that waited. Its `_sum` rate is the share of time ingest
/// was held to the projector's pace.
pub const STORE_PACE_WAIT_SECONDS: &str = "leerspoor_store_pace_wait_seconds";
/// Gauge: the store's contiguous applied `LRS_IN` sequence.
pub const STORE_APPLIED: &str = "leerspoor_store_applied_sequence";
/// Gauge: the projector's applied `LRS_STORED` sequence.
pub const PROJECTOR_APPLIED: &str = "leerspoor_projector_applied_sequence";
/// Gauge: age in seconds of the last `LRS_STORED` message the projector applied, when it was
/// applied (how far summaries trail the statements).
pub const PROJECTOR_LAG_SECONDS: &str = "leerspoor_projector_lag_seconds";
/// Gauge: messages a durable consumer has not been delivered yet, by `stream`, `consumer`.
pub const CONSUMER_PENDING: &str = "leerspoor_consumer_pending_messages";
/// Gauge: messages delivered to a consumer and not yet acknowledged.
pub const CONSUMER_ACK_PENDING: &str = "leerspoor_consumer_ack_pending_messages";
/// Gauge: messages delivered more than once and not yet acknowledged.
pub const CONSUMER_REDELIVERED: &str = "leerspoor_consumer_redelivered_messages";
/// Gauge: messages in a stream, by `stream`.
pub const STREAM_MESSAGES: &str = "leerspoor_stream_messages";
/// Gauge: bytes a sled database takes on disk, by `db` (`store`, `projector`).
pub const SLED_BYTES: &str = "leerspoor_sled_size_bytes";
/// Gauge: 1 while this process's NATS connection is up.
pub const NATS_CONNECTED: &str = "leerspoor_nats_connected";
/// Gauge: connections made to NATS since the process started (1 + reconnects).
pub const NATS_CONNECTS: &str = "leerspoor_nats_connects";
/// Gauge: 1 while `/health/ready` would answer 200.
pub const READY: &str = "leerspoor_ready";
/// Counter: statements delivered to a forwarding target or webhook, by `target`.
pub const DELIVERED: &str = "leerspoor_delivered_statements_total";
/// Counter: failed delivery attempts (the target down or refusing), by `target`.
pub const DELIVERY_FAILURES: &str = "leerspoor_delivery_failures_total";
/// Counter: statements a webhook gave up on (its dead-letter list), by `target`.
pub const DEAD_LETTERS: &str = "leerspoor_dead_letters_total";
/// Gauge: `LRS_STORED` messages a forwarding target or webhook has still to deliver.
pub const DELIVERY_PENDING: &str = "leerspoor_delivery_pending_messages";
/// Histogram: seconds one delivery (a POST to a target) took, by `target`.
pub const DELIVERY_SECONDS: &str = "leerspoor_delivery_seconds";

/// Every metric name above.
pub const ALL: [&str; 25] = [
    HTTP_REQUESTS,
    HTTP_SECONDS,
    STATEMENT_WRITES,
    READS,
    STATEMENTS_ACCEPTED,
    STATEMENTS_REJECTED,
    STORE_APPLY_SECONDS,
    STORE_FLUSH_SECONDS,
    STORE_PACE_WAIT_SECONDS,
    STORE_APPLIED,
    PROJECTOR_APPLIED,
    PROJECTOR_LAG_SECONDS,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    CONSUMER_REDELIVERED,
    STREAM_MESSAGES,
    SLED_BYTES,
    NATS_CONNECTED,
    NATS_CONNECTS,
    READY,
    DELIVERED,
    DELIVERY_FAILURES,
    DEAD_LETTERS,
    DELIVERY_PENDING,
    DELIVERY_SECONDS,
];

/// Histogram buckets (seconds) for every `*_seconds` histogram: 0.5 ms to 30 s.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The `source` label of an `LRS_IN` subject: `http`, `hub.<hub>`, `admin.import`.
pub fn source_label(subject: &str) -> String {
    subject
        .strip_prefix(crate::subjects::IN_PREFIX)
        .unwrap_or(subject)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard and the alert rules name only metrics that exist.
    #[test]
    fn the_shipped_dashboard_and_alerts_use_real_metric_names() {
        let shipped = [
            include_str!("../../../deploy/monitoring/grafana-dashboard.json"),
            include_str!("../../../deploy/monitoring/leerspoor-alerts.yml"),
        ];
        let mut used = 0;
        for text in shipped {
            for (start, _) in text.match_indices("leerspoor_") {
                let name: String = text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                if name == "leerspoor_" {
                    continue;
                }
                assert!(ALL.contains(&base), "{name} is not a Leerspoor metric");
                used += 1;
            }
        }
        assert!(used > 20, "the dashboard and alerts name metrics");
    }
}
