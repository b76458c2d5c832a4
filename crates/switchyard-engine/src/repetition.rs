//! The repetition guard: stops a generation caught in a loop.
//!
//! Small models, greedy above all, fall into loops ("the the the …", one
//! sentence over and over) and would run to the end of the context. The
//! guard watches the generated tokens for a phrase of up to
//! [`MAX_PERIOD`] tokens repeated back to back, and calls a loop once the
//! repeating stretch is long and has repeated often enough that no
//! ordinary text does it (a table rule of `=` is a handful of tokens; a
//! list of items differs from item to item).
//!
//! Incremental: for each period `p` it keeps how many tokens in a row have
//! equalled the token `p` places before them, so each token costs
//! [`MAX_PERIOD`] comparisons.

use std::collections::VecDeque;

/// Longest repeating phrase looked for, in tokens.
pub const MAX_PERIOD: usize = 32;
/// A loop is at least this many tokens of repetition...
const MIN_LOOP_TOKENS: usize = 64;
/// ...in which the phrase occurs at least this many times.
const MIN_REPEATS: usize = 4;

/// Watches one sequence's generated tokens.
#[derive(Debug, Clone)]
pub struct RepetitionGuard {
    recent: VecDeque<i32>,
    /// `runs[p - 1]`: tokens in a row equal to the one `p` before them.
    runs: [usize; MAX_PERIOD],
}

/// A loop the guard found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loop {
    /// The repeating phrase's length in tokens.
    pub period: usize,
    /// How many tokens the repetition has lasted.
    pub tokens: usize,
}

impl Default for RepetitionGuard {
    fn default() -> Self {
        Self {
            recent: VecDeque::with_capacity(MAX_PERIOD + 1),
            runs: [0; MAX_PERIOD],
        }
    }
}

impl RepetitionGuard {
    /// Adds a generated token; reports a loop once one is certain.
    pub fn push(&mut self, token: i32) -> Option<Loop> {
        let mut found = None;
        for period in 1..=MAX_PERIOD {
            // `recent` holds the last MAX_PERIOD tokens, newest at the back.
            let before = self
                .recent
                .len()
                .checked_sub(period)
                .and_then(|at| self.recent.get(at));
            let run = &mut self.runs[period - 1];
            *run = if before == Some(&token) { *run + 1 } else { 0 };
            // A run of r tokens equal to their predecessor p places back
            // spans r + p tokens, which hold the phrase (r + p) / p times.
            let span = *run + period;
            if found.is_none() && span >= MIN_LOOP_TOKENS && span >= MIN_REPEATS * period {
                found = Some(Loop {
                    period,
                    tokens: span,
                });
            }
        }
        if self.recent.len() == MAX_PERIOD {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(guard: &mut RepetitionGuard, tokens: impl IntoIterator<Item = i32>) -> Option<Loop> {
        tokens.into_iter().find_map(|t| guard.push(t))
    }

    #[test]
    fn one_token_over_and_over_is_a_loop() {
        let mut guard = RepetitionGuard::default();
        let found = feed(&mut guard, std::iter::repeat_n(7, 200)).unwrap();
        assert_eq!(found.period, 1);
        assert_eq!(found.tokens, MIN_LOOP_TOKENS);
    }

    #[test]
    fn a_repeated_sentence_is_caught_after_it_repeats_enough() {
        let sentence: Vec<i32> = (100..120).collect();
        let mut guard = RepetitionGuard::default();
        let mut fed = 0;
        let mut found = None;
        for token in sentence.iter().cycle().take(400) {
            fed += 1;
            if let Some(l) = guard.push(*token) {
                found = Some(l);
                break;
            }
        }
        let found = found.unwrap();
        assert_eq!(found.period, 20);
        // Four occurrences of the 20-token sentence, 80 tokens.
        assert_eq!(fed, 80);
    }

    #[test]
    fn varied_text_and_short_repeats_are_not_loops() {
        let mut guard = RepetitionGuard::default();
        // A short run of one token (a rule of dashes), then varied text.
        assert_eq!(feed(&mut guard, std::iter::repeat_n(5, 20)), None);
        let varied = (0..2_000).map(|i: i32| i * 7919 % 5003);
        assert_eq!(feed(&mut guard, varied), None);
        // A list whose items share a prefix but differ.
        let list = (0..50).flat_map(|i| [1, 2, 3, 1000 + i]);
        assert_eq!(feed(&mut guard, list), None);
    }

    #[test]
    fn phrases_longer_than_the_window_are_not_tracked() {
        let phrase: Vec<i32> = (0..(MAX_PERIOD as i32 + 1)).collect();
        let mut guard = RepetitionGuard::default();
        let tokens = phrase.iter().copied().cycle().take(phrase.len() * 10);
        assert_eq!(feed(&mut guard, tokens), None);
    }
}
