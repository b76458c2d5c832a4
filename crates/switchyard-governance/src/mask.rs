//! Masking of secrets and personal data in text that is stored or logged:
//! API keys and tokens, emails, card numbers and phone numbers.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// One kind of datum: its pattern and what replaces it.
struct Rule {
    pattern: Regex,
    label: &'static str,
    /// A second check on a match (the Luhn sum for card numbers).
    accept: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// Card numbers pass the Luhn check; most other 13–19 digit runs do not.
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// The patterns are literals tested below; a failure to compile is a bug
// caught by those tests, and `rules()` then masks nothing rather than
// panicking in a server.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, label, accept| {
        Regex::new(pattern).ok().map(|pattern| Rule {
            pattern,
            label,
            accept,
        })
    };
    [
        // Bearer tokens and JWTs before the generic key shapes they contain.
        rule(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}", "[TOKEN]", always),
        rule(
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
            "[TOKEN]",
            always,
        ),
        // Provider and platform keys: OpenAI/Anthropic (sk-…), Switchyard
        // (sy-…), AWS access key ids, GitHub, Slack, Google API keys.
        rule(
            r"\b(?:sk|sy|pk|rk)-[A-Za-z0-9._-]{16,}",
            "[API_KEY]",
            always,
        ),
        rule(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[API_KEY]", always),
        rule(r"\bgh[pousr]_[A-Za-z0-9]{30,}", "[API_KEY]", always),
        rule(r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "[API_KEY]", always),
        rule(r"\bAIza[0-9A-Za-z_-]{35}", "[API_KEY]", always),
        rule(
            r"(?i)\b(?:api[_-]?key|secret|password|passwd|token)\s*[:=]\s*[^\s,;]{6,}",
            "[SECRET]",
            always,
        ),
        rule(
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
            "[EMAIL]",
            always,
        ),
        rule(r"\b(?:\d[ -]?){12,18}\d\b", "[CARD]", luhn),
        // International (+CC …) or grouped national numbers of 9+ digits.
        rule(
            r"(?:\+\d{1,3}[ -]?)?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]\d{2,4}){1,4}\b|\+\d{9,15}\b",
            "[PHONE]",
            |m: &str| m.chars().filter(char::is_ascii_digit).count() >= 9,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// `text` with every secret and personal datum replaced by a label such as
/// `[EMAIL]` or `[API_KEY]`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut current = Cow::Borrowed(text);
    for rule in RULES.iter() {
        if !rule.pattern.is_match(&current) {
            continue;
        }
        let replaced = rule
            .pattern
            .replace_all(&current, |caps: &Captures<'_>| {
                let matched = caps.get(0).map_or("", |m| m.as_str());
                if (rule.accept)(matched) {
                    rule.label.to_owned()
                } else {
                    matched.to_owned()
                }
            })
            .into_owned();
        current = Cow::Owned(replaced);
    }
    current
}

/// How many masking rules compiled (all of them, unless a pattern is
/// broken).
pub fn rule_count() -> usize {
    RULES.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        assert_eq!(rule_count(), 11);
    }

    #[test]
    fn emails() {
        assert_eq!(
            mask("write to jane.doe+x@example.co.uk today"),
            "write to [EMAIL] today"
        );
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(mask("call +44 20 7946 0958 now"), "call [PHONE] now");
        assert_eq!(mask("or (555) 123-4567 x"), "or [PHONE] x");
        assert_eq!(mask("or +14155550123."), "or [PHONE].");
        // Short numbers, years and versions stay.
        assert_eq!(
            mask("in 2024 we sold 300 units, v1.2.3"),
            "in 2024 we sold 300 units, v1.2.3"
        );
    }

    #[test]
    fn card_numbers_pass_luhn_others_stay() {
        assert_eq!(mask("card 4111 1111 1111 1111 ok"), "card [CARD] ok");
        assert_eq!(mask("card 4111-1111-1111-1111"), "card [CARD]");
        assert_eq!(mask("card 5500005555555559"), "card [CARD]");
        // Fails Luhn: an order number, not a card (and too long for a phone).
        assert_eq!(
            mask("order 1234567812345678901"),
            "order 1234567812345678901"
        );
    }

    #[test]
    fn api_keys_and_tokens() {
        assert_eq!(mask("key sk-proj-abcdefghijklmnop1234"), "key [API_KEY]");
        assert_eq!(
            mask("sy-key_0123456789abcdef.00112233445566778899aabbccddeeff"),
            "[API_KEY]"
        );
        assert_eq!(mask("aws AKIAIOSFODNN7EXAMPLE id"), "aws [API_KEY] id");
        assert_eq!(
            mask("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            "gh [API_KEY]"
        );
        assert_eq!(
            mask("Authorization: Bearer abc.def-ghi_jkl"),
            "Authorization: [TOKEN]"
        );
        assert_eq!(
            mask(
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
            ),
            "jwt [TOKEN]"
        );
        assert_eq!(mask("password=hunter2hunter2"), "[SECRET]");
        assert_eq!(mask("slack xoxb-1234567890-abcdef"), "slack [API_KEY]");
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(mask("nothing to hide here"), Cow::Borrowed(_)));
    }
}
