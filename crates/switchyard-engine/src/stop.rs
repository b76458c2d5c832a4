//! Stop sequences over streamed text.
//!
//! Text that might be the start of a stop sequence is held back until it is
//! clear either way, so a client never receives part of a stop string.

/// Finds stop sequences in text that arrives piece by piece.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What one piece of text produced.
#[derive(Debug, PartialEq, Eq)]
pub struct StopScan {
    /// Text that is safe to send now.
    pub emit: String,
    /// A stop sequence was found; nothing after it may be sent.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for these stop sequences (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds generated text.
    pub fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan {
                emit: text.to_owned(),
                stopped: false,
            };
        }
        self.held.push_str(text);
        let first_match = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_match {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return StopScan {
                emit,
                stopped: true,
            };
        }
        let keep = self.longest_partial_suffix();
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopScan {
            emit,
            stopped: false,
        }
    }

    /// Ends the text: what was held back was not a stop sequence after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest tail of `held` that begins some stop sequence.
    fn longest_partial_suffix(&self) -> usize {
        let held = self.held.as_str();
        self.stops
            .iter()
            .map(|stop| {
                let longest = stop.len().saturating_sub(1).min(held.len());
                (1..=longest)
                    .rev()
                    .find(|&len| {
                        let start = held.len() - len;
                        held.is_char_boundary(start) && stop.starts_with(&held[start..])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn without_stops_everything_passes_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc").emit, "abc");
    }

    #[test]
    fn stop_split_across_pieces_is_never_emitted() {
        let mut m = matcher(&["END"]);
        let a = m.push("Hello E");
        assert_eq!(a.emit, "Hello ");
        assert!(!a.stopped);
        let b = m.push("N");
        assert_eq!(b.emit, "");
        let c = m.push("D and more");
        assert_eq!(c.emit, "");
        assert!(c.stopped);
    }

    #[test]
    fn held_text_that_was_not_a_stop_is_released() {
        let mut m = matcher(&["END"]);
        assert_eq!(m.push("E").emit, "");
        assert_eq!(m.push("X").emit, "EX");
        assert_eq!(m.push("EN").emit, "");
        assert_eq!(m.finish(), "EN");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = matcher(&["world", "lo"]);
        let scan = m.push("hello world");
        assert_eq!(scan.emit, "hel");
        assert!(scan.stopped);
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let mut m = matcher(&["éé"]);
        let scan = m.push("café");
        assert_eq!(scan.emit, "caf");
        assert_eq!(m.push("x").emit, "éx");
    }
}
