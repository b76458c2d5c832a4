//! Personal data and secrets in text: where they are and what kind they
//! are. The audit trail masks with these detectors; guardrail policies
//! block, mask or pseudonymise with them.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

/// A kind of personal datum or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataClass {
    /// Bearer tokens and JWTs.
    Token,
    /// Provider and platform API keys.
    ApiKey,
    /// `password=…`, `api_key: …` and the like.
    Secret,
    /// Email addresses.
    Email,
    /// Payment card numbers (Luhn-checked).
    Card,
    /// International bank account numbers (mod-97-checked).
    Iban,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// Phone numbers of nine digits or more.
    Phone,
}

impl DataClass {
    /// Every class, in the order their detectors run (a span claimed by
    /// one is not looked at by the next).
    pub const ALL: [DataClass; 8] = [
        DataClass::Token,
        DataClass::ApiKey,
        DataClass::Secret,
        DataClass::Email,
        DataClass::Iban,
        DataClass::Card,
        DataClass::IpAddress,
        DataClass::Phone,
    ];

    /// The name configurations use.
    pub fn name(self) -> &'static str {
        match self {
            DataClass::Token => "token",
            DataClass::ApiKey => "api_key",
            DataClass::Secret => "secret",
            DataClass::Email => "email",
            DataClass::Card => "card",
            DataClass::Iban => "iban",
            DataClass::IpAddress => "ip",
            DataClass::Phone => "phone",
        }
    }

    /// The class a configuration names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.name() == name)
    }

    /// What replaces a masked value (`[EMAIL]`).
    pub fn label(self) -> &'static str {
        match self {
            DataClass::Token => "[TOKEN]",
            DataClass::ApiKey => "[API_KEY]",
            DataClass::Secret => "[SECRET]",
            DataClass::Email => "[EMAIL]",
            DataClass::Card => "[CARD]",
            DataClass::Iban => "[IBAN]",
            DataClass::IpAddress => "[IP]",
            DataClass::Phone => "[PHONE]",
        }
    }

    /// The stem of a pseudonym (`EMAIL` in `<EMAIL_1>`).
    pub fn stem(self) -> &'static str {
        let label = self.label();
        &label[1..label.len() - 1]
    }
}

/// A datum found in a text: its class and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// What it is.
    pub class: DataClass,
    /// Where it starts (bytes).
    pub start: usize,
    /// Where it ends (bytes, exclusive).
    pub end: usize,
}

struct Detector {
    class: DataClass,
    pattern: Regex,
    /// A second check on a match (a checksum, a parse).
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

/// IBANs pass ISO 13616's mod-97 check.
fn iban_checksum(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let digits = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * digits + value) % 97;
    }
    remainder == 1
}

fn ip_address(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

// The patterns are literals tested below; one that failed to compile would
// be a bug caught by those tests, and is then left out rather than
// panicking in a server.
static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    let detector = |class, pattern: &str, accept| {
        Regex::new(pattern).ok().map(|pattern| Detector {
            class,
            pattern,
            accept,
        })
    };
    [
        // Bearer tokens and JWTs before the generic key shapes they contain.
        detector(
            DataClass::Token,
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
            always,
        ),
        detector(
            DataClass::Token,
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
            always,
        ),
        // OpenAI/Anthropic (sk-…), Switchyard (sy-…), AWS access key ids,
        // GitHub, Slack, Google API keys.
        detector(
            DataClass::ApiKey,
            r"\b(?:sk|sy|pk|rk)-[A-Za-z0-9._-]{16,}",
            always,
        ),
        detector(DataClass::ApiKey, r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", always),
        detector(DataClass::ApiKey, r"\bgh[pousr]_[A-Za-z0-9]{30,}", always),
        detector(DataClass::ApiKey, r"\bxox[abposr]-[A-Za-z0-9-]{10,}", always),
        detector(DataClass::ApiKey, r"\bAIza[0-9A-Za-z_-]{35}", always),
        detector(
            DataClass::Secret,
            r"(?i)\b(?:api[_-]?key|secret|password|passwd|token)\s*[:=]\s*[^\s,;]{6,}",
            always,
        ),
        detector(
            DataClass::Email,
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
            always,
        ),
        detector(
            DataClass::Iban,
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
            iban_checksum,
        ),
        detector(DataClass::Card, r"\b(?:\d[ -]?){12,18}\d\b", luhn),
        detector(
            DataClass::IpAddress,
            r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
            ip_address,
        ),
        // IPv6, full or compressed around `::`. Three colons at least, so
        // that paths like `a::b` are not taken for addresses (`fe80::1`
        // and `::1` are missed for the same reason).
        detector(
            DataClass::IpAddress,
            r"(?i)\b(?:[0-9a-f]{1,4}:){1,7}(?::[0-9a-f]{1,4}){1,7}\b|(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b",
            |m: &str| m.matches(':').count() >= 3 && ip_address(m),
        ),
        // International (+CC …) or grouped national numbers of 9+ digits.
        detector(
            DataClass::Phone,
            r"(?:\+\d{1,3}[ -]?)?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]\d{2,4}){1,4}\b|\+\d{9,15}\b",
            |m: &str| m.chars().filter(char::is_ascii_digit).count() >= 9,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// The data of `classes` in `text`, in order, none overlapping (earlier
/// classes in [`DataClass::ALL`] win a contested span).
pub fn find(text: &str, classes: &[DataClass]) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for detector in DETECTORS.iter().filter(|d| classes.contains(&d.class)) {
        for m in detector.pattern.find_iter(text) {
            let overlaps = found.iter().any(|f| f.start < m.end() && m.start() < f.end);
            if !overlaps && (detector.accept)(m.as_str()) {
                found.push(Found {
                    class: detector.class,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// `text` with every datum of every class replaced by its label.
pub fn mask(text: &str) -> Cow<'_, str> {
    let found = find(text, &DataClass::ALL);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(replace(text, &found, |f| f.class.label().to_owned()))
}

/// Something found at a byte range of a text.
pub trait Span {
    /// Where it starts and ends (bytes, end exclusive).
    fn range(&self) -> (usize, usize);
}

impl Span for Found {
    fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// `text` with each span (in order, none overlapping) replaced by what
/// `with` gives for it.
pub fn replace<S: Span>(text: &str, spans: &[S], mut with: impl FnMut(&S) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        let (start, end) = span.range();
        out.push_str(&text[at..start]);
        out.push_str(&with(span));
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether a word may begin a secret whose value follows after
/// whitespace (`password: hunter2`, `Bearer eyJ…`), or joins one (`=`).
fn leads_a_secret(word: &str) -> bool {
    let bare = word.trim_end_matches([':', '=']);
    bare.is_empty()
        || [
            "bearer", "apikey", "api_key", "api-key", "secret", "password", "passwd", "token",
        ]
        .iter()
        .any(|key| bare.eq_ignore_ascii_case(key))
}

/// Whether `c` may appear inside an email address, a key, a token or an
/// IP address as the detectors read them (a secret's value after its
/// keyword may hold anything but whitespace, `,` and `;`).
fn in_word_datum(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-@:~/=".contains(c)
}

/// How many bytes at the end of a streamed `text` may still become (part
/// of) a datum of `classes` as more text arrives: the only part an output
/// check must hold back. Emails, keys, tokens and addresses contain no
/// whitespace and few punctuation marks, so the trailing run of the
/// characters they are made of is enough (nothing once a word ends in `!`,
/// `?` or a space), with a secret's keyword before its value; cards,
/// phones and IBANs are digit groups split by spaces or dashes, so the
/// trailing run of such groups is held while it has a digit in it.
/// Ordinary prose thus waits for one word at most.
pub fn forming_tail(text: &str, classes: &[DataClass]) -> usize {
    let has = |wanted: &[DataClass]| classes.iter().any(|c| wanted.contains(c));
    let mut start = text.len();
    if has(&[
        DataClass::Token,
        DataClass::ApiKey,
        DataClass::Email,
        DataClass::IpAddress,
    ]) {
        start = text
            .char_indices()
            .rev()
            .take_while(|(_, c)| in_word_datum(*c))
            .last()
            .map_or(text.len(), |(at, _)| at);
    }
    if has(&[DataClass::Secret, DataClass::Token]) {
        // A value after `password:` or `Bearer` may hold any non-space
        // character: the last word, and the words before it that lead it.
        let word = text.rfind(char::is_whitespace).map_or(0, |space| {
            space + text[space..].chars().next().map_or(1, char::len_utf8)
        });
        let mut lead = word;
        let mut words = text[..word].split_whitespace().rev().peekable();
        while let Some(previous) = words.next_if(|w| leads_a_secret(w)) {
            if let Some(at) = text[..lead].rfind(previous) {
                lead = at;
            }
        }
        let led = lead < word || text[word..].contains([':', '=']);
        if led {
            start = start.min(lead);
        }
    }
    if has(&[DataClass::Card, DataClass::Phone, DataClass::Iban]) {
        let run = text
            .char_indices()
            .rev()
            .take_while(|(_, c)| {
                c.is_ascii_digit() || c.is_ascii_uppercase() || " -+().".contains(*c)
            })
            .last()
            .map_or(text.len(), |(at, _)| at);
        // A datum begins with a digit, `+`, `(` or a letter, never with a
        // separator.
        let run = text[run..]
            .find(|c: char| !" -.)".contains(c))
            .map_or(text.len(), |offset| run + offset);
        if text[run..].chars().any(|c| c.is_ascii_digit()) {
            start = start.min(run);
        }
    }
    text.len() - start
}

/// How many detectors compiled (all of them, unless a pattern is broken).
pub fn detector_count() -> usize {
    DETECTORS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_may_still_become_a_datum_is_held() {
        let all = DataClass::ALL;
        // Prose: the word being written, nothing once it ends.
        assert_eq!(forming_tail("The capital of France is Par", &all), 3);
        assert_eq!(forming_tail("The capital of France is Paris. ", &all), 0);
        assert_eq!(forming_tail("Hello!", &all), 0);
        // An address or a key still arriving is held whole.
        assert_eq!(forming_tail("write to jane.doe@exa", &all), 12);
        assert_eq!(forming_tail("the key is sk-abc", &all), 6);
        // A secret's keyword and separator come with its value.
        assert_eq!(forming_tail("use password = hunter", &all), 17);
        assert_eq!(forming_tail("send it with Bearer ", &all), 7);
        // Digit groups across spaces, while they have a digit.
        assert_eq!(forming_tail("card 4111 1111 ", &all), 10);
        assert_eq!(forming_tail("call +1 (555) 123", &all), 12);
        assert_eq!(forming_tail("I said OK ", &[DataClass::Phone]), 0);
        // Classes not asked for hold nothing of their shape.
        assert_eq!(forming_tail("write to jane.doe@exa", &[DataClass::Card]), 0);
    }

    #[test]
    fn every_detector_compiles() {
        assert_eq!(detector_count(), 14);
    }

    #[test]
    fn emails_phones_cards() {
        assert_eq!(
            mask("write to jane.doe+x@example.co.uk today"),
            "write to [EMAIL] today"
        );
        assert_eq!(mask("call +44 20 7946 0958 now"), "call [PHONE] now");
        assert_eq!(mask("card 4111 1111 1111 1111 ok"), "card [CARD] ok");
        assert_eq!(
            mask("order 1234567812345678901"),
            "order 1234567812345678901"
        );
        assert_eq!(
            mask("in 2024 we sold 300 units, v1.2.3"),
            "in 2024 we sold 300 units, v1.2.3"
        );
    }

    #[test]
    fn ibans_pass_their_checksum() {
        assert_eq!(
            mask("pay GB82 WEST 1234 5698 7654 32 now"),
            "pay [IBAN] now"
        );
        assert_eq!(mask("to DE89370400440532013000."), "to [IBAN].");
        // One digit off: not an IBAN.
        assert_eq!(
            mask("to DE89370400440532013001."),
            "to DE89370400440532013001."
        );
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(mask("from 192.168.10.7 at"), "from [IP] at");
        assert_eq!(mask("v6 2001:db8:85a3::8a2e:370:7334 x"), "v6 [IP] x");
        assert_eq!(mask("not 999.1.1.1 nor 1.2.3"), "not 999.1.1.1 nor 1.2.3");
    }

    #[test]
    fn spans_name_class_and_offsets() {
        let text = "mail a@b.io, card 4111111111111111";
        let found = find(text, &[DataClass::Email, DataClass::Card]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].class, DataClass::Email);
        assert_eq!(&text[found[0].start..found[0].end], "a@b.io");
        assert_eq!(&text[found[1].start..found[1].end], "4111111111111111");
        // Only the classes asked for.
        assert_eq!(find(text, &[DataClass::Phone]), []);
    }

    #[test]
    fn names_round_trip() {
        for class in DataClass::ALL {
            assert_eq!(DataClass::from_name(class.name()), Some(class));
        }
        assert_eq!(DataClass::Email.stem(), "EMAIL");
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
