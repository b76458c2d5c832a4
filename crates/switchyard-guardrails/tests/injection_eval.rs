//! The injection heuristics on a labelled set (`data/injection_eval.jsonl`:
//! 50 attempts and 50 ordinary requests, many of those written to look
//! like attempts: "ignore the noise", "act as a translator", "god mode in
//! Doom"), beside a naive keyword baseline. The set was written after the
//! heuristics and not used to tune them.
//!
//! `cargo test -p switchyard-guardrails --test injection_eval -- --nocapture`
//! prints precision and recall.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use switchyard_guardrails::injection::suspicions;

/// A filter a careful operator might write in a minute.
fn keyword_baseline(text: &str) -> bool {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).collect();
    ["ignore", "disregard", "jailbreak", "jailbroken", "dan"]
        .iter()
        .any(|word| words.contains(word))
        || lower.contains("system prompt")
}

struct Score {
    precision: f64,
    recall: f64,
}

impl Score {
    fn f1(&self) -> f64 {
        2.0 * self.precision * self.recall / (self.precision + self.recall)
    }
}

fn score(set: &[(String, bool)], flags: impl Fn(&str) -> bool) -> Score {
    let (mut tp, mut fp, mut missed) = (0.0, 0.0, 0.0);
    for (text, injection) in set {
        match (flags(text), *injection) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => missed += 1.0,
            (false, false) => {}
        }
    }
    Score {
        precision: tp / (tp + fp),
        recall: tp / (tp + missed),
    }
}

#[test]
fn heuristics_beat_a_keyword_filter_on_the_labelled_set() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/injection_eval.jsonl");
    let set: Vec<(String, bool)> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            (
                row["text"].as_str().unwrap().to_owned(),
                row["injection"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(set.len(), 100);
    let heuristics = score(&set, |t| !suspicions(t).is_empty());
    let baseline = score(&set, keyword_baseline);
    println!(
        "heuristics: precision {:.2} recall {:.2} F1 {:.2}; keyword baseline: precision {:.2} recall {:.2} F1 {:.2}",
        heuristics.precision,
        heuristics.recall,
        heuristics.f1(),
        baseline.precision,
        baseline.recall,
        baseline.f1()
    );
    for (text, injection) in &set {
        let flagged = !suspicions(text).is_empty();
        if flagged != *injection {
            let what = if flagged { "false positive" } else { "missed" };
            println!("  {what}: {text}");
        }
    }
    assert!(
        heuristics.precision >= 0.9,
        "precision {:.2}",
        heuristics.precision
    );
    assert!(heuristics.f1() > baseline.f1());
}
