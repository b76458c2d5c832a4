//! Budget periods and prices.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_state::records::BudgetPeriod;
use time::{Date, OffsetDateTime, Time};

/// Where a period begins and ends, in Unix milliseconds (`end` is `None`
/// for a total budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodBounds {
    /// First millisecond.
    pub start: i64,
    /// First millisecond of the next period.
    pub end: Option<i64>,
}

fn millis(date: Date) -> i64 {
    let seconds = date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp();
    seconds.saturating_mul(1000)
}

/// The period of `period` that contains `now_ms`.
pub fn period_bounds(period: BudgetPeriod, now_ms: i64) -> PeriodBounds {
    let Ok(now) = OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000)) else {
        return PeriodBounds {
            start: 0,
            end: None,
        };
    };
    let today = now.date();
    match period {
        BudgetPeriod::Total => PeriodBounds {
            start: 0,
            end: None,
        },
        BudgetPeriod::Daily => PeriodBounds {
            start: millis(today),
            end: today.next_day().map(millis),
        },
        BudgetPeriod::Monthly => {
            let first = today.replace_day(1).unwrap_or(today);
            let next = if first.month() == time::Month::December {
                Date::from_calendar_date(first.year() + 1, time::Month::January, 1)
            } else {
                Date::from_calendar_date(first.year(), first.month().next(), 1)
            };
            PeriodBounds {
                start: millis(first),
                end: next.ok().map(millis),
            }
        }
    }
}

impl PeriodBounds {
    /// Time left in the period, if it ends.
    pub fn remaining(&self, now_ms: i64) -> Option<Duration> {
        self.end
            .map(|end| Duration::from_millis(u64::try_from(end - now_ms).unwrap_or(0)))
    }
}

/// Prices per million tokens, in US dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache (defaults to
    /// the input price).
    pub cached_input: Option<f64>,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens (cached ones included).
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Of the prompt tokens, those served from a prompt cache.
    pub cached: u64,
}

impl Tokens {
    /// Input and output together, as token limits count them.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// Prices by deployment (the model name in the configuration). Models
/// without a price (local ones, unless priced) cost nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl PriceTable {
    /// A table of these prices.
    pub fn new(prices: HashMap<String, Price>) -> Self {
        Self { prices }
    }

    /// The cost of `tokens` on `deployment`, in US dollars.
    pub fn cost(&self, deployment: &str, tokens: Tokens) -> f64 {
        let Some(price) = self.prices.get(deployment) else {
            return 0.0;
        };
        let cached = tokens.cached.min(tokens.input);
        let fresh = tokens.input - cached;
        let per_million = 1_000_000.0;
        (fresh as f64 * price.input
            + cached as f64 * price.cached_input.unwrap_or(price.input)
            + tokens.output as f64 * price.output)
            / per_million
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T13:00:00Z
    const LEAP_DAY_1PM: i64 = 1_709_211_600_000;

    #[test]
    fn daily_and_monthly_periods_are_utc_calendar_periods() {
        let day = period_bounds(BudgetPeriod::Daily, LEAP_DAY_1PM);
        assert_eq!(day.start, 1_709_164_800_000); // 2024-02-29T00:00Z
        assert_eq!(day.end, Some(1_709_251_200_000)); // 2024-03-01T00:00Z
        let month = period_bounds(BudgetPeriod::Monthly, LEAP_DAY_1PM);
        assert_eq!(month.start, 1_706_745_600_000); // 2024-02-01T00:00Z
        assert_eq!(month.end, Some(1_709_251_200_000));
        let december = period_bounds(BudgetPeriod::Monthly, 1_735_000_000_000); // 2024-12-24
        assert_eq!(december.end, Some(1_735_689_600_000)); // 2025-01-01
        assert_eq!(period_bounds(BudgetPeriod::Total, LEAP_DAY_1PM).end, None);
        assert_eq!(
            day.remaining(LEAP_DAY_1PM),
            Some(Duration::from_secs(11 * 3600))
        );
    }

    #[test]
    fn cost_counts_cached_input_at_its_own_price() {
        let table = PriceTable::new(HashMap::from([(
            "gpt".to_owned(),
            Price {
                input: 2.0,
                output: 8.0,
                cached_input: Some(0.5),
            },
        )]));
        let tokens = Tokens {
            input: 1_000_000,
            output: 500_000,
            cached: 400_000,
        };
        let cost = table.cost("gpt", tokens);
        assert!((cost - (0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)).abs() < 1e-9);
        assert_eq!(table.cost("local", tokens), 0.0);
    }
}
