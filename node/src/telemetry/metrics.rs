//! Names, descriptions and recording helpers of every metric the node exports.
//!
//! Naming follows Prometheus conventions: `cas_` prefix, base units
//! (seconds, bytes), `_total` for counters. Labels are low-cardinality:
//! endpoint names, status classes, operation names and error codes, never
//! hashes or paths.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Histogram buckets for latencies, in seconds: 0.5 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Requests served, by API endpoint and status (HTTP status or gRPC code).
pub const REQUESTS: &str = "cas_requests_total";
/// Request latency, by API endpoint.
pub const REQUEST_SECONDS: &str = "cas_request_duration_seconds";
/// Bytes received in request bodies, by API endpoint.
pub const BYTES_IN: &str = "cas_bytes_in_total";
/// Bytes sent in response bodies, by API endpoint.
pub const BYTES_OUT: &str = "cas_bytes_out_total";
/// Global-dedup queries answered, by outcome (`hit` or `miss`).
pub const DEDUP_QUERIES: &str = "cas_dedup_queries_total";
/// S3 calls, by operation and outcome (`ok` or an error code).
pub const S3_REQUESTS: &str = "cas_s3_requests_total";
/// S3 call latency, by operation.
pub const S3_SECONDS: &str = "cas_s3_request_duration_seconds";

/// Registers the description and unit of every metric with the installed recorder.
pub fn describe_all() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests served, by API endpoint and status (HTTP status or gRPC code)."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Request latency, by API endpoint."
    );
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Bytes received in request bodies, by API endpoint."
    );
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Bytes sent in response bodies, by API endpoint."
    );
    describe_counter!(
        DEDUP_QUERIES,
        Unit::Count,
        "Global-dedup queries, by outcome (hit or miss)."
    );
    describe_counter!(
        S3_REQUESTS,
        Unit::Count,
        "S3 calls, by operation and outcome (ok or error code)."
    );
    describe_histogram!(S3_SECONDS, Unit::Seconds, "S3 call latency, by operation.");
}

/// Records one served request; `status` is the HTTP status (`"200"`) or, for gRPC
/// endpoints, the gRPC code name (`"Ok"`, `"NotFound"`).
pub fn record_request(
    endpoint: &'static str,
    status: &str,
    elapsed: Duration,
    bytes_in: u64,
    bytes_out: u64,
) {
    counter!(REQUESTS, "endpoint" => endpoint, "status" => status.to_owned()).increment(1);
    histogram!(REQUEST_SECONDS, "endpoint" => endpoint).record(elapsed.as_secs_f64());
    if bytes_in > 0 {
        counter!(BYTES_IN, "endpoint" => endpoint).increment(bytes_in);
    }
    if bytes_out > 0 {
        counter!(BYTES_OUT, "endpoint" => endpoint).increment(bytes_out);
    }
}

/// Records one global-dedup query and whether it found a shard.
pub fn record_dedup_query(hit: bool) {
    counter!(DEDUP_QUERIES, "outcome" => if hit { "hit" } else { "miss" }).increment(1);
}

/// Records one S3 call: `outcome` is `"ok"` or the store's error code.
pub fn record_s3_call(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(S3_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(S3_SECONDS, "operation" => operation).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Renders what the helpers record, through a recorder local to this test.
    fn render(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            record();
        });
        handle.render()
    }

    #[test]
    fn helpers_export_described_series_with_labels() {
        let text = render(|| {
            record_request("xorb_upload", "200", Duration::from_millis(3), 1000, 20);
            record_request("xorb_upload", "400", Duration::from_millis(1), 10, 0);
            record_request("grpc_has_xorbs", "NotFound", Duration::from_millis(1), 0, 0);
            record_dedup_query(true);
            record_dedup_query(false);
            record_dedup_query(false);
            record_s3_call("put_object", "ok", Duration::from_millis(7));
        });
        for line in [
            "# HELP cas_requests_total Requests served, by API endpoint and status (HTTP status or gRPC code).",
            "cas_requests_total{endpoint=\"xorb_upload\",status=\"200\"} 1",
            "cas_requests_total{endpoint=\"xorb_upload\",status=\"400\"} 1",
            "cas_requests_total{endpoint=\"grpc_has_xorbs\",status=\"NotFound\"} 1",
            "cas_bytes_in_total{endpoint=\"xorb_upload\"} 1010",
            "cas_bytes_out_total{endpoint=\"xorb_upload\"} 20",
            "cas_dedup_queries_total{outcome=\"hit\"} 1",
            "cas_dedup_queries_total{outcome=\"miss\"} 2",
            "cas_s3_requests_total{operation=\"put_object\",outcome=\"ok\"} 1",
            "cas_s3_request_duration_seconds_bucket{operation=\"put_object\",le=\"0.01\"} 1",
            "cas_request_duration_seconds_count{endpoint=\"xorb_upload\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
