//! What happens to a drift or anomaly alarm once the detector raises or
//! resolves it: a row in `/admin/alerts`, a metric, a log line, and a
//! POST to the configured webhook, retried with growing pauses.
//!
//! All of it happens on one background task, in the order the alarms
//! arose, so a request never waits on the database or the webhook, and a
//! resolution never reaches the store or the receiver before its alarm.

use std::time::Duration;

use serde::Serialize;
use switchyard_state::SqlStore;
use switchyard_state::records::AnomalyAlert;
use switchyard_telemetry::metrics::metrics;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::anomaly::{AlarmEvent, AnomalyDetector, AnomalySettings, Observation, WebhookSettings};

/// Alarms waiting for the background task; beyond this, new ones are
/// dropped with a warning rather than held in memory without bound.
const QUEUE: usize = 1024;

/// Longest a webhook receiver gets to answer one attempt.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause between webhook attempts; each later one doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// The detector and the task that delivers its alarms.
#[derive(Debug)]
pub struct Alarms {
    detector: AnomalyDetector,
    queue: mpsc::Sender<AlarmEvent>,
}

impl Alarms {
    /// Starts the delivery task on the current runtime.
    pub fn start(settings: AnomalySettings, store: SqlStore) -> Self {
        let (queue, events) = mpsc::channel(QUEUE);
        let webhook = settings.webhook.clone().map(Webhook::new);
        tokio::spawn(deliver(events, store, webhook));
        Self {
            detector: AnomalyDetector::new(settings),
            queue,
        }
    }

    /// Adds a finished request to its series and queues what it raised
    /// or resolved.
    pub fn observe(&self, sample: &Observation<'_>) {
        for event in self.detector.observe(sample) {
            if self.queue.try_send(event).is_err() {
                warn!("anomaly alarms are arriving faster than they can be stored; one is dropped");
            }
        }
    }
}

/// The body POSTed to the webhook.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
enum Delivery<'a> {
    /// An alarm was raised.
    #[serde(rename = "anomaly.raised")]
    Raised {
        /// The alarm, as `/admin/alerts` lists it.
        alert: &'a AnomalyAlert,
    },
    /// An open alarm closed.
    #[serde(rename = "anomaly.resolved")]
    Resolved {
        /// Its id, as raised.
        id: &'a str,
        /// When, Unix milliseconds.
        resolved_at: i64,
        /// `back_to_baseline` or `new_baseline`.
        resolution: &'a str,
        /// The series' tenant.
        tenant_id: Option<&'a str>,
        /// The series' model.
        model: &'a str,
        /// The series.
        signal: &'a str,
    },
}

async fn deliver(
    mut events: mpsc::Receiver<AlarmEvent>,
    store: SqlStore,
    webhook: Option<Webhook>,
) {
    while let Some(event) = events.recv().await {
        let delivery = match &event {
            AlarmEvent::Raised(alert) => {
                let tenant = alert.tenant_id.as_deref().unwrap_or("-");
                metrics().anomaly_raised(tenant, &alert.model, &alert.signal);
                warn!(
                    alert = %alert.id,
                    tenant,
                    model = %alert.model,
                    signal = %alert.signal,
                    observed = alert.observed,
                    baseline = alert.baseline,
                    bound = alert.bound,
                    score = alert.score,
                    "anomaly alarm: a series left its baseline"
                );
                if let Err(error) = store.insert_anomaly(alert).await {
                    warn!(%error, "cannot record an anomaly alarm");
                }
                Delivery::Raised { alert }
            }
            AlarmEvent::Resolved {
                id,
                at,
                how,
                tenant,
                model,
                signal,
            } => {
                let tenant_label = tenant.as_deref().unwrap_or("-");
                metrics().anomaly_resolved(tenant_label, model, signal.as_str());
                info!(
                    alert = %id,
                    tenant = tenant_label,
                    %model,
                    signal = signal.as_str(),
                    resolution = how,
                    "anomaly alarm resolved"
                );
                if let Err(error) = store.resolve_anomaly(id, *at, how).await {
                    warn!(%error, "cannot record an anomaly alarm's resolution");
                }
                Delivery::Resolved {
                    id,
                    resolved_at: *at,
                    resolution: how,
                    tenant_id: tenant.as_deref(),
                    model,
                    signal: signal.as_str(),
                }
            }
        };
        if let Some(webhook) = &webhook {
            webhook.post(&delivery).await;
        }
    }
}

/// The configured receiver of alarms.
#[derive(Debug)]
struct Webhook {
    settings: WebhookSettings,
    http: reqwest::Client,
}

impl Webhook {
    fn new(settings: WebhookSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { settings, http }
    }

    /// POSTs `delivery`, retrying network failures, timeouts and answers
    /// that say to try again (408, 429, 5xx); gives up with a warning.
    async fn post(&self, delivery: &Delivery<'_>) {
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=self.settings.attempts {
            let outcome = self
                .http
                .post(&self.settings.url)
                .json(delivery)
                .send()
                .await;
            let retry = match outcome {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => {
                    let status = answer.status();
                    warn!(%status, attempt, "the anomaly webhook refused an alarm");
                    status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(error) => {
                    warn!(%error, attempt, "cannot reach the anomaly webhook");
                    true
                }
            };
            if !retry {
                break;
            }
            if attempt < self.settings.attempts {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        // Not the URL: webhook URLs often carry their secret in the path.
        warn!("an anomaly alarm was not delivered to the webhook");
    }
}
