//! Rates (errors, refusals) judged exactly: a batch's count of events is
//! binomial, and at the small rates and batch sizes alarms deal with, its
//! tail is far heavier than a normal's. Four refusals in twenty answers
//! happen about once in 1,300 batches of a 2% series, a "six sigma" point
//! by the normal approximation, so the decision uses the binomial tail
//! itself, at the probability a normal leaves beyond the threshold.
//!
//! Written here rather than taken from a statistics crate: the whole need
//! is a log-space binomial tail and a normal tail, some forty lines.

/// The judgement of a rate: how far out, in the normal deviations of the
/// same tail probability, and the smallest rate that would be an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RateVerdict {
    pub score: f64,
    pub bound: f64,
}

/// Judges `events` out of `trials` against a baseline `rate`.
pub(super) fn judge(rate: f64, events: usize, trials: usize, threshold: f64) -> RateVerdict {
    let trials = trials.max(1);
    let events = events.min(trials);
    let tails = upper_tails(rate, trials);
    let score = normal_equivalent(tails[events]);
    let limit = log_normal_tail(threshold);
    let bound_events = (0..=trials)
        .find(|&k| tails[k] < limit)
        .unwrap_or(trials + 1);
    RateVerdict {
        score,
        bound: bound_events as f64 / trials as f64,
    }
}

/// `ln P(X ≥ k)` for every `k` in `0..=n`, X ~ Binomial(n, p).
fn upper_tails(p: f64, n: usize) -> Vec<f64> {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    // ln C(n, k) built up term by term.
    let mut ln_choose = 0.0;
    let mut ln_pmf = Vec::with_capacity(n + 1);
    for k in 0..=n {
        if k > 0 {
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        ln_pmf.push(ln_choose + k as f64 * ln_p + (n - k) as f64 * ln_q);
    }
    let mut tails = vec![f64::NEG_INFINITY; n + 1];
    let mut running = f64::NEG_INFINITY;
    for k in (0..=n).rev() {
        running = log_add(running, ln_pmf[k]);
        tails[k] = running;
    }
    tails
}

fn log_add(a: f64, b: f64) -> f64 {
    let (high, low) = if a > b { (a, b) } else { (b, a) };
    if low == f64::NEG_INFINITY {
        return high;
    }
    high + (low - high).exp().ln_1p()
}

/// `ln P(Z > z)` for a standard normal Z.
fn log_normal_tail(z: f64) -> f64 {
    if z < 0.0 {
        return (-log_normal_tail(-z).exp()).ln_1p();
    }
    let density = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln();
    if z >= 3.0 {
        // The asymptotic (Mills ratio) series: within 1% from z = 3 on,
        // and it never underflows.
        let r = 1.0 / (z * z);
        density - z.ln() + (1.0 - r + 3.0 * r * r - 15.0 * r * r * r).ln()
    } else {
        // Abramowitz and Stegun 26.2.17, absolute error below 7.5e-8.
        let t = 1.0 / (1.0 + 0.231_641_9 * z);
        let poly = t
            * (0.319_381_530
                + t * (-0.356_563_782
                    + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
        density + poly.ln()
    }
}

/// The `z` with `ln P(Z > z) = log_tail`, by bisection.
fn normal_equivalent(log_tail: f64) -> f64 {
    let (mut low, mut high) = (-10.0_f64, 60.0_f64);
    for _ in 0..80 {
        let mid = f64::midpoint(low, high);
        if log_normal_tail(mid) > log_tail {
            low = mid;
        } else {
            high = mid;
        }
    }
    f64::midpoint(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_matches_known_values() {
        for (z, tail) in [
            (0.0, 0.5),
            (1.0, 0.158_655),
            (3.0, 1.349_9e-3),
            (6.0, 9.866e-10),
        ] {
            let got = log_normal_tail(z).exp();
            assert!(
                (got - tail).abs() / tail < 0.01,
                "Q({z}) = {got}, not {tail}"
            );
        }
        assert!((normal_equivalent(0.158_655_f64.ln()) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn binomial_tails_are_exact() {
        // P(X ≥ 4 | n = 20, p = 0.02) = 1 − P(X ≤ 3) ≈ 6.0e-4.
        let tails = upper_tails(0.02, 20);
        assert!((tails[0].exp() - 1.0).abs() < 1e-12);
        assert!(
            (tails[4].exp() - 6.0e-4).abs() < 0.2e-4,
            "{}",
            tails[4].exp()
        );
    }

    #[test]
    fn rare_events_need_many_to_alarm() {
        let verdict = judge(0.02, 4, 20, 6.0);
        assert!(verdict.score < 6.0, "{verdict:?}");
        assert!((0.3..0.5).contains(&verdict.bound), "{verdict:?}");
        assert!(judge(0.02, 10, 20, 6.0).score > 6.0);
    }
}
