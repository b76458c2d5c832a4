//! The `[anomalies]` table: drift and anomaly alarms per tenant × model.

use serde::Deserialize;

use crate::FieldProblem;

/// How drift and anomalies are watched for (see the governance layer's
/// `anomaly` module for the method).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesConfig {
    /// Whether alarms are watched for at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Requests summed into one point of the per-request series (error
    /// rate, latency percentiles, tokens, refusals, answer length).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Points a series' baseline keeps (the most recent ones).
    #[serde(default = "default_baseline")]
    pub baseline: usize,
    /// Points a baseline needs before anything is judged against it.
    #[serde(default = "default_min_points")]
    pub min_points: usize,
    /// How far from the baseline's median a point must be, in robust
    /// standard deviations (MAD × 1.4826), to raise an alarm.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Seconds of spend summed into one point of the cost series.
    #[serde(default = "default_cost_bucket_secs")]
    pub cost_bucket_secs: u64,
    /// The smallest rise in spend, in US dollars per hour, worth an alarm:
    /// keeps a quiet tenant's first requests from raising one.
    #[serde(default = "default_cost_floor")]
    pub cost_floor_usd_per_hour: f64,
    /// Where raised and resolved alarms are POSTed as JSON, if anywhere.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Attempts at delivering each webhook call (with growing pauses).
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: u32,
}

impl Default for AnomaliesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: default_batch(),
            baseline: default_baseline(),
            min_points: default_min_points(),
            threshold: default_threshold(),
            cost_bucket_secs: default_cost_bucket_secs(),
            cost_floor_usd_per_hour: default_cost_floor(),
            webhook_url: None,
            webhook_attempts: default_webhook_attempts(),
        }
    }
}

impl AnomaliesConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldProblem> {
        let problem = |field: &str, message: &str| -> Result<(), FieldProblem> {
            Err((format!("anomalies.{field}"), message.to_owned()))
        };
        if self.batch == 0 {
            return problem("batch", "must be at least 1");
        }
        if self.min_points < 3 {
            return problem("min_points", "must be at least 3");
        }
        if self.baseline < self.min_points {
            return problem("baseline", "must be at least min_points");
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return problem("threshold", "must be a positive number");
        }
        if self.cost_bucket_secs == 0 {
            return problem("cost_bucket_secs", "must be at least 1");
        }
        if !(self.cost_floor_usd_per_hour.is_finite() && self.cost_floor_usd_per_hour >= 0.0) {
            return problem("cost_floor_usd_per_hour", "must be zero or more");
        }
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return problem("webhook_url", "must be an http:// or https:// URL");
        }
        if self.webhook_attempts == 0 {
            return problem("webhook_attempts", "must be at least 1");
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    20
}
fn default_baseline() -> usize {
    30
}
fn default_min_points() -> usize {
    10
}
fn default_threshold() -> f64 {
    6.0
}
fn default_cost_bucket_secs() -> u64 {
    300
}
fn default_cost_floor() -> f64 {
    1.0
}
fn default_webhook_attempts() -> u32 {
    4
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), text, &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn alarms_are_on_by_default_and_settings_are_checked() {
        let config = parse("[models.m]\nbackend = \"openai\"\nbase_url = \"http://x\"\n").unwrap();
        assert!(config.anomalies.enabled);
        assert_eq!(config.anomalies.batch, 20);
        let base = "[models.m]\nbackend = \"openai\"\nbase_url = \"http://x\"\n[anomalies]\n";
        for (line, field) in [
            ("min_points = 2", "anomalies.min_points"),
            ("baseline = 5", "anomalies.baseline"),
            ("threshold = 0", "anomalies.threshold"),
            ("webhook_url = \"ftp://x\"", "anomalies.webhook_url"),
            ("batch = 0", "anomalies.batch"),
        ] {
            let error = parse(&format!("{base}{line}\n")).unwrap_err();
            assert!(error.contains(field), "{line}: {error}");
        }
        let tuned = parse(&format!("{base}batch = 5\nwebhook_url = \"https://h/x\"\n")).unwrap();
        assert_eq!(tuned.anomalies.batch, 5);
        assert_eq!(tuned.anomalies.webhook_url.as_deref(), Some("https://h/x"));
    }
}
