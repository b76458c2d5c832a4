//! Masking of secrets and personal data in text that is stored or logged
//! (API keys and tokens, emails, cards, IBANs, IP addresses, phone
//! numbers): the guardrails' detectors, so that the audit trail and the
//! policies recognise the same data.

pub use switchyard_guardrails::detect::mask;
