//! Output checks, incremental: a streamed answer passes through a bounded
//! hold-back window, so that a match split across chunks is caught before
//! any of it reaches the client; masks rewrite it, a block ends the answer
//! where the match begins. Pseudonymised values are restored as the text
//! leaves the window (a placeholder split across chunks included).

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_core::Decision;

use crate::detect;
use crate::input::{Blocked, Restorer, decision};
use crate::policy::{Action, Applied, Check, Hit, Policy};

/// Where an answer stands after a piece of it was checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Passed {
    /// Text the client may see now (possibly empty: held back).
    Text(String),
    /// A check blocked the answer: the text before the match, then the end.
    Blocked {
        /// What the client may still see.
        text: String,
        /// Why it ended.
        blocked: Blocked,
    },
}

/// The output checks of one answer, with its window and its restorer.
pub struct OutputGuard {
    /// Shared, so that each piece's pass over them costs one count, not a copy.
    checks: Arc<[(Arc<Policy>, usize)]>,
    restorer: Restorer,
    window: usize,
    pending: String,
    /// Bytes of the answer already passed on, so decisions give offsets
    /// in the whole answer.
    passed: usize,
    decisions: Vec<Decision>,
    /// Streamed tool-call arguments held per call, while they end in what
    /// may be the start of a placeholder.
    held_arguments: BTreeMap<u32, String>,
}

impl std::fmt::Debug for OutputGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputGuard")
            .field("window", &self.window)
            .field("held", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Applied {
    /// The guard for this request's answer; `None` when nothing needs to
    /// watch it (no output checks, no pseudonyms to restore).
    pub fn output_guard(&self, restorer: Restorer) -> Option<OutputGuard> {
        let checks: Arc<[_]> = self
            .policies
            .iter()
            .flat_map(|policy| {
                policy
                    .checks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.output)
                    .map(|(i, _)| (policy.clone(), i))
            })
            .collect();
        if checks.is_empty() && restorer.is_empty() {
            return None;
        }
        // A placeholder must fit the window whole to be restored.
        let window = self.hold_back.max(restorer.longest());
        Some(OutputGuard {
            checks,
            restorer,
            window,
            pending: String::new(),
            passed: 0,
            decisions: Vec::new(),
            held_arguments: BTreeMap::new(),
        })
    }
}

impl OutputGuard {
    /// Checks `piece`, appended to what is held; returns what may go out.
    pub fn push(&mut self, piece: &str) -> Passed {
        self.pending.push_str(piece);
        self.advance(false)
    }

    /// The answer ended: checks and releases what is still held.
    pub fn finish(&mut self) -> Passed {
        self.advance(true)
    }

    /// The judges that read this answer, if any.
    pub fn judges(&self) -> Option<crate::OutputJudges> {
        crate::OutputJudges::among(&self.checks)
    }

    /// The decisions taken so far (drained).
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }

    /// A whole answer, checked at once.
    pub fn whole(&mut self, text: &str) -> Passed {
        match self.push(text) {
            Passed::Text(mut head) => match self.finish() {
                Passed::Text(tail) => {
                    head.push_str(&tail);
                    Passed::Text(head)
                }
                Passed::Blocked { text, blocked } => {
                    head.push_str(&text);
                    Passed::Blocked {
                        text: head,
                        blocked,
                    }
                }
            },
            blocked => blocked,
        }
    }

    fn advance(&mut self, end: bool) -> Passed {
        // Where the held text may be cut: everything but the window, at a
        // character boundary; everything at the end.
        // Where the held text may be cut: before whatever tail a check says
        // may still be the start of a match, or a placeholder may still be
        // arriving (bounded by the window); everything at the end.
        let mut cut = if end {
            self.pending.len()
        } else {
            let held = self
                .checks
                .iter()
                .map(|(policy, index)| {
                    policy.checks[*index]
                        .test
                        .hold_back(&self.pending, self.window)
                })
                .chain([self.placeholder_hold()])
                .max()
                .unwrap_or(0);
            let mut cut = self.pending.len() - held;
            while !self.pending.is_char_boundary(cut) {
                cut -= 1;
            }
            cut
        };
        for (policy, index) in self.checks.clone().iter() {
            let index = *index;
            let check = &policy.checks[index];
            let hits = check.test.hits(&self.pending);
            // A match running past the cut may still grow: hold it back
            // whole, and decide once it is complete.
            let mut settled: Vec<Hit> = Vec::new();
            for hit in hits {
                if !end && hit.end >= cut {
                    cut = cut.min(hit.start);
                } else {
                    settled.push(hit);
                }
            }
            if settled.is_empty() {
                continue;
            }
            for hit in &settled {
                let mut at = hit.clone();
                at.start += self.passed;
                at.end += self.passed;
                self.decisions
                    .push(decision(&policy.name, check, "output", &at, None));
            }
            match check.action {
                Action::Block => {
                    let first = &settled[0];
                    let text = self.release(first.start);
                    self.pending.clear();
                    return Passed::Blocked {
                        text,
                        blocked: Blocked {
                            policy: policy.name.clone(),
                            check: check.name.clone(),
                            found: first.found.clone(),
                            decisions: self.decisions.clone(),
                        },
                    };
                }
                // Routing is decided before the call; config validation keeps
                // it off the output side.
                Action::Flag | Action::Route => {}
                Action::Mask | Action::Pseudonymize => {
                    // Keep the cut at the same place relative to the tail.
                    let tail = self.pending.len() - cut;
                    self.pending = detect::replace(&self.pending, &settled, |hit| {
                        Check::mask_label(hit).to_owned()
                    });
                    cut = self.pending.len().saturating_sub(tail);
                }
            }
        }
        Passed::Text(self.release(cut))
    }

    /// A streamed piece of tool call `index`'s arguments, with the
    /// placeholders the model wrote restored; a placeholder split across
    /// pieces is held until it is whole. Arguments are JSON for the
    /// client's own code, so they are restored, never checked or cut.
    pub fn push_tool_arguments(&mut self, index: u32, piece: &str) -> String {
        if self.restorer.is_empty() {
            return piece.to_owned();
        }
        let held = self.held_arguments.entry(index).or_default();
        held.push_str(piece);
        let keep = placeholder_tail(held, self.restorer.longest());
        let out: String = held.drain(..held.len() - keep).collect();
        self.restorer.restore(&out)
    }

    /// What is still held of each call's arguments, at the end of the
    /// answer (a `<` that began no placeholder, say), restored.
    pub fn finish_tool_arguments(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.held_arguments)
            .into_iter()
            .filter(|(_, held)| !held.is_empty())
            .map(|(index, held)| (index, self.restorer.restore(&held)))
            .collect()
    }

    /// The tail that may be a placeholder still arriving, held so that it
    /// is restored whole.
    fn placeholder_hold(&self) -> usize {
        if self.restorer.is_empty() {
            return 0;
        }
        placeholder_tail(&self.pending, self.window)
    }

    /// Passes on the held text up to `cut`, restoring placeholders.
    fn release(&mut self, cut: usize) -> String {
        let out: String = self.pending.drain(..cut).collect();
        self.passed += out.len();
        if self.restorer.is_empty() {
            out
        } else {
            self.restorer.restore(&out)
        }
    }
}

/// The length of `text`'s tail from an unclosed `<` no further back than
/// `longest` bytes: a placeholder that may still be arriving.
fn placeholder_tail(text: &str, longest: usize) -> usize {
    match text.rfind('<') {
        Some(open) if !text[open..].contains('>') && text.len() - open < longest => {
            text.len() - open
        }
        _ => 0,
    }
}
