//! Which windows and slots a request must fit in, and the
//! `x-ratelimit-*` headers that report them.

use std::time::Duration;

use switchyard_state::counters::{WindowCharge, WindowState};
use switchyard_state::records::Limits;

/// Rate limits count over one minute, as OpenAI's RPM and TPM do.
pub const MINUTE: Duration = Duration::from_secs(60);

/// What a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Requests.
    Requests,
    /// Tokens.
    Tokens,
}

/// A window charge and what it is about, for messages and headers.
#[derive(Debug, Clone)]
pub struct LabelledCharge {
    /// The charge.
    pub charge: WindowCharge,
    /// `key key_…`, `team team_…`, `tenant ten_…`, with the model when
    /// the limit is per model.
    pub scope: String,
    /// Requests or tokens.
    pub counted: Counted,
}

/// The limits of one scope (a key, its team, its tenant).
pub struct ScopeLimits<'a> {
    /// `key`, `team` or `tenant`.
    pub kind: &'static str,
    /// The scope's id.
    pub id: &'a str,
    /// Its limits.
    pub limits: &'a Limits,
}

/// The charges a request for `model` estimated at `tokens` makes.
pub fn charges(scopes: &[ScopeLimits<'_>], model: &str, tokens: u64) -> Vec<LabelledCharge> {
    let mut out = Vec::new();
    let mut push = |scope: String, key: String, limit: Option<u64>, counted: Counted| {
        if let Some(limit) = limit {
            let (suffix, amount) = match counted {
                Counted::Requests => ("rpm", 1),
                Counted::Tokens => ("tpm", tokens),
            };
            out.push(LabelledCharge {
                charge: WindowCharge {
                    key: format!("{key}:{suffix}"),
                    limit,
                    amount,
                    window: MINUTE,
                },
                scope,
                counted,
            });
        }
    };
    for scope in scopes {
        let base = format!("rl:{}:{}", scope.kind, scope.id);
        let label = format!("{} {}", scope.kind, scope.id);
        push(
            label.clone(),
            base.clone(),
            scope.limits.rpm,
            Counted::Requests,
        );
        push(
            label.clone(),
            base.clone(),
            scope.limits.tpm,
            Counted::Tokens,
        );
        if let Some(per_model) = scope.limits.models.get(model) {
            let key = format!("{base}:model:{model}");
            let label = format!("{label} for model {model}");
            push(label.clone(), key.clone(), per_model.rpm, Counted::Requests);
            push(label, key, per_model.tpm, Counted::Tokens);
        }
    }
    out
}

/// Concurrency slots of the scopes that cap requests in flight.
pub fn slots(scopes: &[ScopeLimits<'_>]) -> Vec<(String, u64, String)> {
    scopes
        .iter()
        .filter_map(|scope| {
            scope.limits.max_concurrent.map(|limit| {
                (
                    format!("cc:{}:{}", scope.kind, scope.id),
                    limit,
                    format!("{} {}", scope.kind, scope.id),
                )
            })
        })
        .collect()
}

/// The tightest request and token windows, as OpenAI's headers report
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// The tightest request window.
    pub requests: Option<WindowState>,
    /// The tightest token window.
    pub tokens: Option<WindowState>,
}

impl RateHeaders {
    /// Picks, per kind, the window with the fewest units left.
    pub fn from_states(charges: &[LabelledCharge], states: &[WindowState]) -> Self {
        let mut headers = Self::default();
        for (charge, state) in charges.iter().zip(states) {
            let slot = match charge.counted {
                Counted::Requests => &mut headers.requests,
                Counted::Tokens => &mut headers.tokens,
            };
            if slot.as_ref().is_none_or(|s| state.remaining < s.remaining) {
                *slot = Some(state.clone());
            }
        }
        headers
    }

    /// `(name, value)` pairs: `x-ratelimit-limit-requests`, `-remaining-`,
    /// `-reset-`, and the same for tokens.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(state) = &self.requests {
            pairs.push(("x-ratelimit-limit-requests", state.limit.to_string()));
            pairs.push((
                "x-ratelimit-remaining-requests",
                state.remaining.to_string(),
            ));
            pairs.push(("x-ratelimit-reset-requests", go_duration(state.reset)));
        }
        if let Some(state) = &self.tokens {
            pairs.push(("x-ratelimit-limit-tokens", state.limit.to_string()));
            pairs.push(("x-ratelimit-remaining-tokens", state.remaining.to_string()));
            pairs.push(("x-ratelimit-reset-tokens", go_duration(state.reset)));
        }
        pairs
    }
}

/// A duration as OpenAI writes reset times: `17ms`, `1s`, `6m0s`.
pub fn go_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = duration.as_secs_f64();
    let minutes = (seconds / 60.0).floor();
    let rest = seconds - minutes * 60.0;
    let rest = if rest.fract() == 0.0 {
        format!("{rest:.0}")
    } else {
        format!("{rest:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    };
    if minutes > 0.0 {
        format!("{minutes:.0}m{rest}s")
    } else {
        format!("{rest}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchyard_state::records::ModelLimits;

    use super::*;

    #[test]
    fn each_set_limit_becomes_one_charge() {
        let key_limits = Limits {
            rpm: Some(60),
            tpm: Some(10_000),
            max_concurrent: Some(2),
            models: BTreeMap::from([(
                "gpt".to_owned(),
                ModelLimits {
                    rpm: Some(5),
                    tpm: None,
                },
            )]),
        };
        let tenant_limits = Limits {
            rpm: Some(600),
            ..Limits::default()
        };
        let scopes = [
            ScopeLimits {
                kind: "key",
                id: "key_1",
                limits: &key_limits,
            },
            ScopeLimits {
                kind: "tenant",
                id: "ten_1",
                limits: &tenant_limits,
            },
        ];
        let charges = charges(&scopes, "gpt", 123);
        let keys: Vec<_> = charges.iter().map(|c| c.charge.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rl:key:key_1:rpm",
                "rl:key:key_1:tpm",
                "rl:key:key_1:model:gpt:rpm",
                "rl:tenant:ten_1:rpm"
            ]
        );
        assert_eq!(charges[1].charge.amount, 123);
        assert_eq!(slots(&scopes).len(), 1);
    }

    #[test]
    fn reset_times_read_like_openais() {
        assert_eq!(go_duration(Duration::from_millis(17)), "17ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
