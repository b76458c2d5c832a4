//! Switchyard's telemetry foundation, beside `switchyard-core` at the
//! bottom of the layers: every layer reports through it and it knows none
//! of them.
//!
//! - [`metrics`]: the Prometheus registry (`GET /metrics`): the GenAI
//!   histograms, the gateway's counters, its own overhead per request.
//! - [`trace`]: W3C trace context, continued from clients and passed on to
//!   upstreams; OpenTelemetry attributes on spans when spans are exported.
//! - [`clock`]: the time a request spent waiting on upstreams.
//! - [`labels`]: bounded label cardinality.

pub mod clock;
pub mod labels;
pub mod metrics;
pub mod trace;

pub use clock::UpstreamClock;
pub use metrics::{
    AttemptRecord, DeploymentSnapshot, EngineSnapshot, Operation, RequestRecord, metrics,
};
