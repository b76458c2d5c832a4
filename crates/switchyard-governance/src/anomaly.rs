//! Drift and anomaly alarms per tenant × model.
//!
//! Every finished model request is a sample of its tenant × model series.
//! Per-request signals (error rate, latency p50 and p95, tokens per
//! request, refusal rate, answer length) are summed over batches of
//! `batch` requests: one point per batch, so a single slow request is
//! never an alarm but a slow batch is. Spend is summed over fixed time
//! buckets (`cost_bucket`) and expressed in dollars per hour.
//!
//! Each point is judged against the series' own baseline, its last
//! `baseline` normal points, with the median and the median absolute
//! deviation (MAD): `score = (point − median) / (1.4826 × MAD)`, the
//! robust analogue of a z-score that a few earlier outliers cannot drag.
//! A point scoring beyond `threshold` raises an alarm, once a baseline
//! holds `min_points` points. Latency, errors, refusals and cost alarm
//! upwards only (getting better is no incident); tokens and answer length
//! both ways (a model that suddenly answers in three words has drifted).
//!
//! Latencies are judged on a log scale (they vary by multiples). Rates
//! (errors, refusals) are counts of events in a batch, and are judged by
//! their exact binomial tail against the baseline's pooled rate, at the
//! probability a normal leaves beyond `threshold` (see [`binomial`]).
//!
//! A MAD of zero (a series that never varied) would make any change an
//! alarm, so each signal has a smallest spread: a tenth (on the log
//! scale) for latencies, a tenth of the median plus one for token counts
//! and answer lengths, `cost_floor_usd_per_hour` for spend, and a 1%
//! least rate for errors and refusals.
//!
//! The p95 of a batch is nearly its slowest request or two, so it must
//! be out of bounds on two batches in a row.
//!
//! Points that raise or keep an alarm open stay out of the baseline, so a
//! shift does not teach the baseline that it is normal. An alarm resolves
//! when a point is back inside the limits; if the series stays out for
//! `min_points` points in a row, those points become its new baseline
//! (the model changed, say) and the alarm resolves as `new_baseline`.
//!
//! Spend is also checked while its bucket fills: spend only grows within
//! a bucket, so a bucket whose running total already crosses the limit
//! will end above it. A cost spike is raised on the request that crosses
//! the limit, long before the hour ends, and before a budget is reached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use switchyard_state::records::AnomalyAlert;

mod binomial;

/// The least baseline rate errors and refusals are judged against.
const RATE_FLOOR: f64 = 0.01;

/// MAD × this estimates a normal distribution's standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;

/// Most tenant × model series watched at once; beyond it new ones are
/// not (a bound on memory whatever names arrive).
const MAX_SERIES: usize = 10_000;

/// How alarms are raised.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    /// Requests per point of the per-request series.
    pub batch: usize,
    /// Points a baseline keeps.
    pub baseline: usize,
    /// Points a baseline needs before points are judged.
    pub min_points: usize,
    /// Robust score beyond which a point is an alarm.
    pub threshold: f64,
    /// Length of one point of the spend series.
    pub cost_bucket: Duration,
    /// The smallest spread of the spend series, in US dollars per hour.
    pub cost_floor_usd_per_hour: f64,
    /// Where alarms are POSTed, if anywhere.
    pub webhook: Option<WebhookSettings>,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            batch: 20,
            baseline: 30,
            min_points: 10,
            threshold: 6.0,
            cost_bucket: Duration::from_secs(300),
            cost_floor_usd_per_hour: 1.0,
            webhook: None,
        }
    }
}

/// Where alarms are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The URL POSTed to.
    pub url: String,
    /// Attempts per delivery.
    pub attempts: u32,
}

/// A watched series of a tenant × model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Share of requests failed by the gateway or its upstreams (5xx).
    ErrorRate,
    /// Median latency of the batch's successful requests, milliseconds.
    LatencyP50,
    /// 95th percentile latency of the batch, milliseconds.
    LatencyP95,
    /// Mean tokens (input and output) per successful request.
    TokensPerRequest,
    /// Share of answers that refuse or say they do not know.
    RefusalRate,
    /// Mean answer length, characters.
    AnswerChars,
    /// Spend, US dollars per hour.
    CostPerHour,
}

const SIGNALS: [Signal; 7] = [
    Signal::ErrorRate,
    Signal::LatencyP50,
    Signal::LatencyP95,
    Signal::TokensPerRequest,
    Signal::RefusalRate,
    Signal::AnswerChars,
    Signal::CostPerHour,
];

impl Signal {
    /// Its name in alerts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::LatencyP50 => "latency_p50_ms",
            Self::LatencyP95 => "latency_p95_ms",
            Self::TokensPerRequest => "tokens_per_request",
            Self::RefusalRate => "refusal_rate",
            Self::AnswerChars => "answer_chars",
            Self::CostPerHour => "cost_usd_per_hour",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether a fall is an alarm too.
    fn two_sided(self) -> bool {
        matches!(self, Self::TokensPerRequest | Self::AnswerChars)
    }

    /// Consecutive points out of bounds that raise an alarm. A batch's
    /// p95 is nearly its slowest request or two: one slow batch is noise
    /// (a long quiet run raised false alarms on single points), two in a
    /// row are a shift.
    fn confirmations(self) -> usize {
        match self {
            Self::LatencyP95 => 2,
            _ => 1,
        }
    }

    /// Whether it is a share of requests, judged by its exact binomial
    /// tail (see [`binomial`]).
    fn is_rate(self) -> bool {
        matches!(self, Self::ErrorRate | Self::RefusalRate)
    }

    /// Latencies are judged on a log scale: they vary by multiples, and a
    /// batch's p95 has a long right tail that a linear spread
    /// underestimates (a quiet run raised false alarms without it).
    /// `ln(1 + ms)` keeps sub-millisecond jitter from counting as a
    /// multiple.
    fn scale(self, value: f64) -> f64 {
        match self {
            Self::LatencyP50 | Self::LatencyP95 => value.max(0.0).ln_1p(),
            _ => value,
        }
    }

    /// The inverse of [`Self::scale`], for reports.
    fn unscale(self, value: f64) -> f64 {
        match self {
            Self::LatencyP50 | Self::LatencyP95 => value.exp_m1(),
            _ => value,
        }
    }

    /// The smallest spread a (scaled) baseline is given, for a baseline
    /// that never varied.
    fn least_spread(self, median: f64, settings: &AnomalySettings) -> f64 {
        match self {
            // A tenth, on the log scale.
            Self::LatencyP50 | Self::LatencyP95 => 1.1_f64.ln(),
            Self::TokensPerRequest | Self::AnswerChars => 0.1 * median.abs() + 1.0,
            Self::CostPerHour => (0.1 * median).max(settings.cost_floor_usd_per_hour),
            // Judged by their binomial tail instead.
            Self::ErrorRate | Self::RefusalRate => f64::MIN_POSITIVE,
        }
    }
}

/// What the answer looked like, for the refusal and length series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerShape {
    /// Its length in characters.
    pub chars: u64,
    /// Whether it refused, said it did not know, or said nothing.
    pub refused: bool,
}

/// One finished request, as the series see it.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The tenant, if the caller had one.
    pub tenant: Option<&'a str>,
    /// The public model name.
    pub model: &'a str,
    /// When it finished, Unix milliseconds (the spend buckets' clock).
    pub at_ms: i64,
    /// Whether the gateway or an upstream failed it (5xx).
    pub failed: bool,
    /// How long it took.
    pub latency: Duration,
    /// Tokens it used, when known.
    pub tokens: Option<u64>,
    /// What it cost, US dollars.
    pub cost: f64,
    /// The answer's shape, when there was a text answer.
    pub answer: Option<AnswerShape>,
}

/// What a sample changed.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmEvent {
    /// A point out of bounds opened an alarm.
    Raised(AnomalyAlert),
    /// An open alarm closed.
    Resolved {
        /// The alarm's id.
        id: String,
        /// When, Unix milliseconds.
        at: i64,
        /// `back_to_baseline` or `new_baseline`.
        how: &'static str,
        /// The series' tenant.
        tenant: Option<String>,
        /// The series' model.
        model: String,
        /// The series.
        signal: Signal,
    },
}

/// The judgement of one point against a baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Verdict {
    median: f64,
    bound: f64,
    score: f64,
    outside: bool,
}

/// One signal's baseline and alarm state.
#[derive(Debug, Default)]
struct Track {
    baseline: VecDeque<f64>,
    /// Consecutive points out of bounds, kept out of the baseline.
    outliers: Vec<f64>,
    /// The open alarm's id.
    open: Option<String>,
}

impl Track {
    /// Judges a (scaled) point; `None` until the baseline is long enough.
    fn judge(
        &self,
        signal: Signal,
        point: f64,
        samples: usize,
        settings: &AnomalySettings,
    ) -> Option<Verdict> {
        if self.baseline.len() < settings.min_points {
            return None;
        }
        if signal.is_rate() {
            // The pooled rate of the baseline, taken as at least 1%: a
            // series that never failed still fails now and then.
            let mean = self.baseline.iter().sum::<f64>() / self.baseline.len() as f64;
            let events = (point * samples as f64).round() as usize;
            let rate = binomial::judge(mean.max(RATE_FLOOR), events, samples, settings.threshold);
            return Some(Verdict {
                median: mean,
                bound: rate.bound,
                score: rate.score,
                outside: rate.score > settings.threshold,
            });
        }
        let mut values: Vec<f64> = self.baseline.iter().copied().collect();
        let median = median_of(&mut values);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        let spread =
            (MAD_TO_SIGMA * median_of(&mut deviations)).max(signal.least_spread(median, settings));
        let score = (point - median) / spread;
        let outside =
            score > settings.threshold || (signal.two_sided() && -score > settings.threshold);
        let bound = if score < 0.0 {
            median - settings.threshold * spread
        } else {
            median + settings.threshold * spread
        };
        Some(Verdict {
            median,
            bound,
            score,
            outside,
        })
    }

    fn remember(&mut self, point: f64, settings: &AnomalySettings) {
        self.baseline.push_back(point);
        while self.baseline.len() > settings.baseline {
            self.baseline.pop_front();
        }
    }
}

/// Where alarms are raised: the series of one tenant × model.
#[derive(Debug, Default)]
struct Series {
    tracks: [Track; SIGNALS.len()],
    batch: Batch,
    /// The spend bucket being filled: its index (time / bucket length).
    bucket: Option<i64>,
    bucket_cost: f64,
    /// Whether the filling bucket already raised its alarm.
    bucket_alarmed: bool,
}

/// The requests of the point being filled.
#[derive(Debug, Default)]
struct Batch {
    requests: usize,
    failures: usize,
    latencies_ms: Vec<f64>,
    tokens: u64,
    counted: usize,
    answers: usize,
    refusals: usize,
    chars: u64,
}

impl Batch {
    /// The batch's points, with the requests behind each.
    fn points(&mut self) -> Vec<(Signal, f64, usize)> {
        let mut points = vec![(
            Signal::ErrorRate,
            self.failures as f64 / self.requests.max(1) as f64,
            self.requests,
        )];
        if !self.latencies_ms.is_empty() {
            self.latencies_ms.sort_by(f64::total_cmp);
            let n = self.latencies_ms.len();
            points.push((Signal::LatencyP50, nearest_rank(&self.latencies_ms, 0.5), n));
            points.push((
                Signal::LatencyP95,
                nearest_rank(&self.latencies_ms, 0.95),
                n,
            ));
        }
        if self.counted > 0 {
            points.push((
                Signal::TokensPerRequest,
                self.tokens as f64 / self.counted as f64,
                self.counted,
            ));
        }
        if self.answers > 0 {
            let answers = self.answers as f64;
            points.push((
                Signal::RefusalRate,
                self.refusals as f64 / answers,
                self.answers,
            ));
            points.push((
                Signal::AnswerChars,
                self.chars as f64 / answers,
                self.answers,
            ));
        }
        points
    }
}

/// The alarm state of every series.
#[derive(Debug)]
pub struct AnomalyDetector {
    settings: AnomalySettings,
    /// Tenant (`""` for none) → model → series: looked up without
    /// allocating on every request.
    series: Mutex<HashMap<String, HashMap<String, Series>>>,
}

impl AnomalyDetector {
    /// A detector with nothing seen yet.
    pub fn new(settings: AnomalySettings) -> Self {
        Self {
            settings,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &AnomalySettings {
        &self.settings
    }

    /// Adds one finished request to its series; returns the alarms it
    /// raised or resolved (usually none).
    pub fn observe(&self, sample: &Observation<'_>) -> Vec<AlarmEvent> {
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let tenant_key = sample.tenant.unwrap_or("");
        let known = all
            .get(tenant_key)
            .is_some_and(|models| models.contains_key(sample.model));
        if !known {
            let watched: usize = all.values().map(HashMap::len).sum();
            if watched >= MAX_SERIES {
                return Vec::new();
            }
        }
        let series = all
            .entry(tenant_key.to_owned())
            .or_default()
            .entry(sample.model.to_owned())
            .or_default();
        let mut events = Vec::new();
        let mut context = Context {
            settings: &self.settings,
            sample,
            events: &mut events,
        };
        context.spend(series);
        context.requests(series);
        events
    }
}

/// One observation's pass over its series.
struct Context<'a, 'b> {
    settings: &'a AnomalySettings,
    sample: &'a Observation<'b>,
    events: &'a mut Vec<AlarmEvent>,
}

impl Context<'_, '_> {
    fn requests(&mut self, series: &mut Series) {
        let sample = self.sample;
        let batch = &mut series.batch;
        batch.requests += 1;
        if sample.failed {
            batch.failures += 1;
        } else {
            batch.latencies_ms.push(sample.latency.as_secs_f64() * 1e3);
            if let Some(tokens) = sample.tokens {
                batch.tokens += tokens;
                batch.counted += 1;
            }
            if let Some(answer) = sample.answer {
                batch.answers += 1;
                batch.chars += answer.chars;
                batch.refusals += usize::from(answer.refused);
            }
        }
        if batch.requests < self.settings.batch {
            return;
        }
        let points = std::mem::take(batch).points();
        for (signal, point, samples) in points {
            self.close(series, signal, point, samples);
        }
    }

    fn spend(&mut self, series: &mut Series) {
        let bucket_ms = i64::try_from(self.settings.cost_bucket.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let per_hour = 3_600_000.0 / bucket_ms as f64;
        let index = self.sample.at_ms.div_euclid(bucket_ms);
        let filling = *series.bucket.get_or_insert(index);
        if index > filling {
            // Close the filled bucket, then the empty ones since (a quiet
            // spell is zero spend), at most a baseline's worth.
            let rate = series.bucket_cost * per_hour;
            self.close(series, Signal::CostPerHour, rate, 1);
            let empty = (index - filling - 1).min(self.settings.baseline as i64);
            for _ in 0..empty {
                self.close(series, Signal::CostPerHour, 0.0, 1);
            }
            series.bucket = Some(index);
            series.bucket_cost = 0.0;
            series.bucket_alarmed = false;
        }
        // A clock that went back adds to the filling bucket.
        series.bucket_cost += self.sample.cost.max(0.0);
        if series.bucket_alarmed || self.sample.cost <= 0.0 {
            return;
        }
        let rate = series.bucket_cost * per_hour;
        let track = &series.tracks[Signal::CostPerHour.index()];
        if let Some(verdict) = track.judge(Signal::CostPerHour, rate, 1, self.settings)
            && verdict.outside
        {
            series.bucket_alarmed = true;
            self.raise(series, Signal::CostPerHour, rate, verdict);
        }
    }

    /// Judges a finished point and keeps it where it belongs.
    fn close(&mut self, series: &mut Series, signal: Signal, point: f64, samples: usize) {
        let settings = self.settings;
        let point = signal.scale(point);
        let track = &series.tracks[signal.index()];
        match track.judge(signal, point, samples, settings) {
            None => series.tracks[signal.index()].remember(point, settings),
            Some(verdict) if verdict.outside => {
                let track = &mut series.tracks[signal.index()];
                track.outliers.push(point);
                if track.open.is_none() && track.outliers.len() >= signal.confirmations() {
                    self.raise(series, signal, point, verdict);
                }
                let track = &mut series.tracks[signal.index()];
                if track.outliers.len() >= settings.min_points {
                    // Out for long enough to be the new normal.
                    track.baseline = std::mem::take(&mut track.outliers).into();
                    self.resolve(series, signal, "new_baseline");
                }
            }
            Some(_) => {
                let track = &mut series.tracks[signal.index()];
                track.outliers.clear();
                track.remember(point, settings);
                self.resolve(series, signal, "back_to_baseline");
            }
        }
    }

    fn raise(&mut self, series: &mut Series, signal: Signal, point: f64, verdict: Verdict) {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let track = &mut series.tracks[signal.index()];
        track.open = Some(id.clone());
        self.events.push(AlarmEvent::Raised(AnomalyAlert {
            id,
            at: self.sample.at_ms,
            tenant_id: self.sample.tenant.map(str::to_owned),
            model: self.sample.model.to_owned(),
            signal: signal.as_str().to_owned(),
            observed: signal.unscale(point),
            baseline: signal.unscale(verdict.median),
            bound: signal.unscale(verdict.bound),
            score: verdict.score,
            points: u32::try_from(track.baseline.len()).unwrap_or(u32::MAX),
            resolved_at: None,
            resolution: None,
        }));
    }

    fn resolve(&mut self, series: &mut Series, signal: Signal, how: &'static str) {
        if let Some(id) = series.tracks[signal.index()].open.take() {
            self.events.push(AlarmEvent::Resolved {
                id,
                at: self.sample.at_ms,
                how,
                tenant: self.sample.tenant.map(str::to_owned),
                model: self.sample.model.to_owned(),
                signal,
            });
        }
    }
}

/// The median of `values` (reordered); 0 when empty.
fn median_of(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// The nearest-rank percentile `q` of sorted, non-empty `values`.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn sample<'a>(tenant: &'a str, model: &'a str, at_ms: i64, latency_ms: f64) -> Observation<'a> {
        Observation {
            tenant: Some(tenant),
            model,
            at_ms,
            failed: false,
            latency: Duration::from_secs_f64(latency_ms / 1e3),
            tokens: Some(120),
            cost: 0.0,
            answer: Some(AnswerShape {
                chars: 400,
                refused: false,
            }),
        }
    }

    fn raised(events: &[AlarmEvent]) -> Vec<&AnomalyAlert> {
        events
            .iter()
            .filter_map(|e| match e {
                AlarmEvent::Raised(alert) => Some(alert),
                AlarmEvent::Resolved { .. } => None,
            })
            .collect()
    }

    /// Latency that varies like a real service's: log-normal around
    /// `typical` milliseconds.
    fn jittered(rng: &mut fastrand::Rng, typical: f64) -> f64 {
        let normal: f64 = (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0;
        typical * (0.35 * normal).exp()
    }

    #[test]
    fn tripled_latency_on_one_deployment_is_raised_within_two_batches() {
        let detector = AnomalyDetector::new(AnomalySettings::default());
        let mut rng = fastrand::Rng::with_seed(7);
        let mut at = 0;
        for _ in 0..400 {
            at += 100;
            let events = detector.observe(&sample("acme", "gpt", at, jittered(&mut rng, 200.0)));
            assert!(
                raised(&events).is_empty(),
                "quiet traffic raised {events:?}"
            );
        }
        // The other model of the tenant keeps its pace throughout.
        let mut shifted_until_alarm = None;
        for n in 1..=200 {
            at += 100;
            let other = detector.observe(&sample("acme", "claude", at, jittered(&mut rng, 200.0)));
            assert!(raised(&other).is_empty());
            let events =
                detector.observe(&sample("acme", "gpt", at, 3.0 * jittered(&mut rng, 200.0)));
            if let Some(alert) = raised(&events).first() {
                assert!(alert.signal.starts_with("latency_p"), "{alert:?}");
                assert_eq!(alert.tenant_id.as_deref(), Some("acme"));
                assert_eq!(alert.model, "gpt");
                assert!(alert.observed > alert.bound && alert.bound > alert.baseline);
                shifted_until_alarm = Some(n);
                break;
            }
        }
        let n = shifted_until_alarm.expect("the shift raised no alarm");
        assert!(n <= 2 * 20, "raised only after {n} shifted requests");
    }

    #[test]
    fn an_alarm_resolves_when_the_series_returns_and_is_raised_once() {
        let settings = AnomalySettings {
            batch: 5,
            ..AnomalySettings::default()
        };
        let detector = AnomalyDetector::new(settings);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut events = Vec::new();
        let mut feed = |latency: f64, events: &mut Vec<AlarmEvent>| {
            events.extend(detector.observe(&sample("t", "m", 0, jittered(&mut rng, latency))));
        };
        for _ in 0..100 {
            feed(100.0, &mut events);
        }
        assert!(events.is_empty());
        for _ in 0..15 {
            feed(1000.0, &mut events);
        }
        let opened = raised(&events).len();
        assert!((1..=2).contains(&opened), "{events:?}");
        events.clear();
        for _ in 0..10 {
            feed(100.0, &mut events);
        }
        assert!(
            events.iter().any(|e| matches!(
                e,
                AlarmEvent::Resolved {
                    how: "back_to_baseline",
                    ..
                }
            )),
            "{events:?}"
        );
    }

    #[test]
    fn a_lasting_shift_becomes_the_new_baseline() {
        let settings = AnomalySettings {
            batch: 1,
            ..AnomalySettings::default()
        };
        let detector = AnomalyDetector::new(settings);
        let mut events = Vec::new();
        for _ in 0..20 {
            events.extend(detector.observe(&sample("t", "m", 0, 100.0)));
        }
        for _ in 0..12 {
            events.extend(detector.observe(&sample("t", "m", 0, 400.0)));
        }
        let p50: Vec<_> = events
            .iter()
            .filter(|e| match e {
                AlarmEvent::Raised(a) => a.signal == "latency_p50_ms",
                AlarmEvent::Resolved { signal, .. } => *signal == Signal::LatencyP50,
            })
            .collect();
        assert!(matches!(p50[0], AlarmEvent::Raised(_)), "{p50:?}");
        assert!(
            matches!(
                p50[1],
                AlarmEvent::Resolved {
                    how: "new_baseline",
                    ..
                }
            ),
            "{p50:?}"
        );
        assert_eq!(p50.len(), 2);
        // 400 ms is normal now.
        events.clear();
        for _ in 0..20 {
            events.extend(detector.observe(&sample("t", "m", 0, 400.0)));
        }
        assert!(raised(&events).is_empty(), "{events:?}");
    }

    #[test]
    fn shorter_answers_and_refusals_are_drift() {
        let settings = AnomalySettings {
            batch: 10,
            ..AnomalySettings::default()
        };
        let detector = AnomalyDetector::new(settings);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200 {
            let mut quiet = sample("t", "m", 0, 100.0);
            quiet.answer = Some(AnswerShape {
                chars: rng.u64(300..500),
                refused: rng.u8(0..100) == 0,
            });
            assert!(raised(&detector.observe(&quiet)).is_empty());
        }
        let mut signals = Vec::new();
        for _ in 0..10 {
            let mut drifted = sample("t", "m", 0, 100.0);
            drifted.answer = Some(AnswerShape {
                chars: 25,
                refused: true,
            });
            for alert in raised(&detector.observe(&drifted)) {
                signals.push(alert.signal.clone());
            }
        }
        assert!(signals.contains(&"answer_chars".to_owned()), "{signals:?}");
        assert!(signals.contains(&"refusal_rate".to_owned()), "{signals:?}");
    }

    #[test]
    fn an_error_burst_is_raised_but_a_stray_failure_is_not() {
        let settings = AnomalySettings::default();
        let detector = AnomalyDetector::new(settings);
        let mut raised_count = 0;
        for i in 0..400 {
            let mut s = sample("t", "m", 0, 100.0);
            // One failure in a hundred: the series' normal.
            s.failed = i % 100 == 50;
            raised_count += raised(&detector.observe(&s)).len();
        }
        assert_eq!(raised_count, 0);
        let mut signals = Vec::new();
        for i in 0..20 {
            let mut s = sample("t", "m", 0, 100.0);
            s.failed = i % 2 == 0;
            signals.extend(
                raised(&detector.observe(&s))
                    .into_iter()
                    .map(|a| a.signal.clone()),
            );
        }
        assert_eq!(signals, ["error_rate"]);
    }

    #[test]
    fn a_cost_spike_is_raised_while_its_bucket_fills_and_before_a_budget_runs_out() {
        let settings = AnomalySettings::default();
        let detector = AnomalyDetector::new(settings);
        let mut rng = fastrand::Rng::with_seed(5);
        // Two hours of a tenant spending about $2/hour in $0.01 requests,
        // one every ~18 s.
        let mut at = 0;
        let mut spent = 0.0;
        while at < 120 * MINUTE {
            at += rng.i64(12_000..24_000);
            let mut s = sample("acme", "gpt", at, 100.0);
            s.cost = 0.01;
            spent += s.cost;
            assert!(raised(&detector.observe(&s)).is_empty(), "at {at}");
        }
        // A runaway agent: $0.05 requests, one a second. A daily budget
        // sized for the normal pace ($2/hour × 24 h = $48) is far away.
        let budget = spent + 48.0;
        let spike_start = at;
        let mut alarm = None;
        while at < spike_start + 60 * MINUTE {
            at += 1000;
            let mut s = sample("acme", "gpt", at, 100.0);
            s.cost = 0.05;
            spent += s.cost;
            if let Some(alert) = raised(&detector.observe(&s))
                .into_iter()
                .find(|a| a.signal == "cost_usd_per_hour")
            {
                alarm = Some((alert.clone(), at - spike_start, spent));
                break;
            }
        }
        let (alert, after_ms, spent_then) = alarm.expect("the spike raised no alarm");
        assert!(after_ms <= 5 * MINUTE, "raised after {after_ms} ms");
        assert!(spent_then < budget);
        assert!(alert.observed > alert.bound, "{alert:?}");
    }

    #[test]
    fn a_quiet_tenant_first_requests_are_no_cost_alarm() {
        let detector = AnomalyDetector::new(AnomalySettings::default());
        // A long quiet spell (empty buckets are a zero baseline), then a
        // few requests: below the cost floor.
        let mut s = sample("t", "m", 0, 100.0);
        s.cost = 0.001;
        detector.observe(&s);
        for minute in [180, 181, 182] {
            let mut s = sample("t", "m", minute * MINUTE, 100.0);
            s.cost = 0.02;
            assert!(raised(&detector.observe(&s)).is_empty());
        }
    }

    /// The false-alarm rate of a long quiet run: 200,000 requests of
    /// noisy but steady traffic over 20 tenant × model series.
    #[test]
    fn a_long_quiet_run_raises_no_alarm() {
        let detector = AnomalyDetector::new(AnomalySettings::default());
        let mut rng = fastrand::Rng::with_seed(42);
        let tenants = ["a", "b", "c", "d", "e"];
        let models = ["m1", "m2", "m3", "m4"];
        let mut alarms = Vec::new();
        let mut at = 0;
        for _ in 0..200_000 {
            at += rng.i64(100..900);
            let tenant = tenants[rng.usize(..tenants.len())];
            let model = models[rng.usize(..models.len())];
            let mut s = sample(tenant, model, at, jittered(&mut rng, 150.0));
            s.failed = rng.u16(0..1000) < 5;
            s.tokens = Some(rng.u64(80..400));
            s.cost = s.tokens.unwrap_or(0) as f64 * 2e-6;
            s.answer = Some(AnswerShape {
                chars: rng.u64(100..1500),
                refused: rng.u16(0..1000) < 20,
            });
            alarms.extend(raised(&detector.observe(&s)).into_iter().cloned());
        }
        assert!(
            alarms.is_empty(),
            "{} false alarms: {alarms:?}",
            alarms.len()
        );
    }

    #[test]
    fn percentiles_and_medians() {
        let mut v = [5.0, 1.0, 3.0, 2.0];
        assert_eq!(median_of(&mut v), 2.5);
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 0.5), 10.0);
        assert_eq!(nearest_rank(&sorted, 0.95), 19.0);
    }
}
