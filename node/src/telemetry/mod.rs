//! Telemetry for SREs: structured logs (tracing) and Prometheus metrics.
//!
//! Every metric the node reports is named and described in [`metrics`], the
//! one place to look up what a series means; layers record through the
//! helpers there rather than with ad-hoc names.

pub mod metrics;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("telemetry.log_filter: {0}")]
    LogFilter(String),
    /// A global logger or metrics recorder is already installed in this process.
    #[error("telemetry is already initialised in this process: {0}")]
    AlreadyInitialised(String),
}

impl TelemetryError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            TelemetryError::LogFilter(_) => "bad_log_filter",
            TelemetryError::AlreadyInitialised(_) => "telemetry_already_initialised",
        }
    }
}

/// Installs the process-wide logger (text or JSON lines on stderr, filtered
/// by `telemetry.log_filter`).
pub fn init_logging(cfg: &TelemetryConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&cfg.log_filter)
        .map_err(|e| TelemetryError::LogFilter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match cfg.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))
}

/// Installs the process-wide Prometheus recorder with every metric described;
/// the handle renders the text exposition format for a `/metrics` endpoint.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(metrics::LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    metrics::describe_all();
    Ok(handle)
}
