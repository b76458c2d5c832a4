//! Whether the end of a streamed text may still become a match of a
//! pattern: the part an output check must hold back. The regex crate finds
//! matches but cannot say that a text is the beginning of one, so each
//! pattern also gets a lazy DFA (regex-automata, which the regex crate is
//! built on), walked from each candidate start until it dies.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input};

/// A pattern's automaton, for prefix questions.
#[derive(Debug)]
pub(crate) struct Prefixes {
    dfa: DFA,
}

impl Prefixes {
    /// The automaton of `pattern`, or `None` when the lazy DFA cannot be
    /// built for it (its tail is then held whole, as before).
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        DFA::builder()
            // Unicode `\b` is supported by giving up on non-ASCII bytes,
            // which counts as "may still match" below.
            .configure(DFA::config().unicode_word_boundary(true))
            .build(pattern)
            .ok()
            .map(|dfa| Self { dfa })
    }

    /// How many bytes at the end of `text` (at most `window`) may be the
    /// beginning of a match that more text could complete.
    pub(crate) fn forming_tail(&self, text: &str, window: usize) -> usize {
        let mut cache = self.dfa.create_cache();
        let earliest = text.len().saturating_sub(window);
        (earliest..text.len())
            .filter(|&start| text.is_char_boundary(start))
            .find(|&start| self.alive_from(&mut cache, text, start))
            .map_or(0, |start| text.len() - start)
    }

    /// Whether a match anchored at `start` is still possible after the
    /// rest of `text`; when the automaton gives up, it is assumed to be.
    fn alive_from(&self, cache: &mut Cache, text: &str, start: usize) -> bool {
        // The whole text, so that look-behind (`\b`) sees the byte before.
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let Ok(mut state) = self.dfa.start_state_forward(cache, &input) else {
            return true;
        };
        for &byte in &text.as_bytes()[start..] {
            state = match self.dfa.next_state(cache, state, byte) {
                Ok(next) => next,
                Err(_) => return true,
            };
            if state.is_dead() {
                return false;
            }
            if state.is_quit() {
                return true;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_a_tail_that_may_grow_into_a_match_is_held() {
        let codes = Prefixes::new(r"(?i)launch\s+codes").unwrap();
        assert_eq!(codes.forming_tail("Here are the laun", 32), 4);
        assert_eq!(codes.forming_tail("Here are the launch ", 32), 7);
        assert_eq!(codes.forming_tail("Here are the keys. ", 32), 0);
        // No further back than the window.
        assert_eq!(codes.forming_tail("launch            ", 4), 0);
        let ticket = Prefixes::new(r"\bTICKET-\d{4,}\b").unwrap();
        assert_eq!(ticket.forming_tail("see TICKET-12", 32), 9);
        // `\b` needs the byte before: "xTICKET" cannot start a match.
        assert_eq!(ticket.forming_tail("seexTICKET-12", 32), 0);
        let word = Prefixes::new(r"\bsecret\b").unwrap();
        assert_eq!(word.forming_tail("ein Geheimnis: secr", 32), 4);
        assert_eq!(word.forming_tail("the cat sat. ", 32), 0);
        // Unicode `\b` gives up on non-ASCII bytes: from the first start
        // that meets one, the tail is held, to be safe (within the window).
        assert_eq!(word.forming_tail("déjà vu. ", 32), 10);
    }
}
