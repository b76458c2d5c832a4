//! The OpenAI-compatible family: where each provider lives and what it does
//! differently from OpenAI, so that a config names a preset instead of
//! rediscovering each quirk.

use serde::Serialize;

/// What an OpenAI-compatible upstream does differently from OpenAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// Sends the token limit as `max_tokens` rather than
    /// `max_completion_tokens` (which many servers do not know).
    pub legacy_max_tokens: bool,
    /// Accepts `stream_options.include_usage`; without it the option is
    /// left out (servers that reject unknown fields answer 400/422).
    pub stream_usage_option: bool,
    /// The field the seed goes in, when not `seed`.
    pub seed_field: Option<&'static str>,
    /// Fields the upstream rejects; dropped from every request.
    pub unsupported_fields: &'static [&'static str],
}

impl Quirks {
    /// OpenAI itself.
    pub const OPENAI: Quirks = Quirks {
        legacy_max_tokens: false,
        stream_usage_option: true,
        seed_field: None,
        unsupported_fields: &[],
    };

    /// Most OpenAI-compatible servers: the classic `max_tokens`, usage in
    /// streams on request.
    pub const COMPATIBLE: Quirks = Quirks {
        legacy_max_tokens: true,
        stream_usage_option: true,
        seed_field: None,
        unsupported_fields: &[],
    };

    /// Serialises a request, applying the quirks.
    pub fn encode<T: Serialize>(&self, body: T) -> Result<Vec<u8>, serde_json::Error> {
        if *self == Quirks::OPENAI {
            // The common case skips the detour through a JSON value.
            return serde_json::to_vec(&body);
        }
        let mut value = serde_json::to_value(body)?;
        if let Some(object) = value.as_object_mut() {
            if self.legacy_max_tokens
                && let Some(limit) = object.remove("max_completion_tokens")
            {
                object.insert("max_tokens".into(), limit);
            }
            if !self.stream_usage_option {
                object.remove("stream_options");
            }
            if let Some(field) = self.seed_field
                && let Some(seed) = object.remove("seed")
            {
                object.insert(field.into(), seed);
            }
            for field in self.unsupported_fields {
                object.remove(*field);
            }
        }
        serde_json::to_vec(&value)
    }
}

/// A named member of the OpenAI-compatible family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name a config uses (`preset = "mistral"`).
    pub name: &'static str,
    /// Its public API, when it has one; self-hosted servers need `base_url`.
    pub base_url: Option<&'static str>,
    /// How it differs from OpenAI.
    pub quirks: Quirks,
    /// The differences, for humans.
    pub notes: &'static str,
}

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        base_url: Some("https://api.openai.com/v1"),
        quirks: Quirks::OPENAI,
        notes: "the reference",
    },
    Preset {
        name: "mistral",
        base_url: Some("https://api.mistral.ai/v1"),
        quirks: Quirks {
            legacy_max_tokens: true,
            stream_usage_option: false,
            seed_field: Some("random_seed"),
            unsupported_fields: &["user", "top_k", "min_p", "repetition_penalty"],
        },
        notes: "seed is `random_seed`; rejects unknown fields such as `user` and \
                `stream_options` (usage comes in the last chunk anyway)",
    },
    Preset {
        name: "deepseek",
        base_url: Some("https://api.deepseek.com/v1"),
        quirks: Quirks::COMPATIBLE,
        notes: "classic `max_tokens`",
    },
    Preset {
        name: "groq",
        base_url: Some("https://api.groq.com/openai/v1"),
        quirks: Quirks {
            unsupported_fields: &["top_k", "min_p", "repetition_penalty"],
            ..Quirks::COMPATIBLE
        },
        notes: "no sampling extensions beyond OpenAI's",
    },
    Preset {
        name: "together",
        base_url: Some("https://api.together.xyz/v1"),
        quirks: Quirks::COMPATIBLE,
        notes: "takes top_k, min_p and repetition_penalty",
    },
    Preset {
        name: "fireworks",
        base_url: Some("https://api.fireworks.ai/inference/v1"),
        quirks: Quirks::COMPATIBLE,
        notes: "model ids look like accounts/fireworks/models/NAME",
    },
    Preset {
        name: "openrouter",
        base_url: Some("https://openrouter.ai/api/v1"),
        quirks: Quirks::COMPATIBLE,
        notes: "model ids look like vendor/model",
    },
    Preset {
        name: "vllm",
        base_url: None,
        quirks: Quirks::COMPATIBLE,
        notes: "self-hosted (http://HOST:8000/v1); takes top_k, min_p, repetition_penalty",
    },
    Preset {
        name: "tgi",
        base_url: None,
        quirks: Quirks {
            stream_usage_option: false,
            ..Quirks::COMPATIBLE
        },
        notes: "self-hosted (http://HOST:8080/v1); upstream_model = \"tgi\"",
    },
    Preset {
        name: "ollama",
        base_url: None,
        quirks: Quirks::COMPATIBLE,
        notes: "self-hosted (http://HOST:11434/v1); no key; model names as in `ollama list`",
    },
    Preset {
        name: "llamacpp",
        base_url: None,
        quirks: Quirks {
            stream_usage_option: false,
            ..Quirks::COMPATIBLE
        },
        notes: "llama.cpp's server (http://HOST:8080/v1); usage arrives in the last chunk",
    },
];

/// Looks a preset up by name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn encoded(quirks: Quirks, body: Value) -> Value {
        serde_json::from_slice(&quirks.encode(body).unwrap()).unwrap()
    }

    #[test]
    fn openai_bodies_pass_unchanged() {
        let body = json!({"model": "m", "max_completion_tokens": 5, "seed": 1});
        assert_eq!(encoded(Quirks::OPENAI, body.clone()), body);
    }

    #[test]
    fn mistral_gets_its_field_names_and_no_unknown_fields() {
        let body = json!({"model": "m", "max_completion_tokens": 5, "seed": 7, "user": "u",
                          "stream": true, "stream_options": {"include_usage": true}});
        let mistral = preset("mistral").unwrap().quirks;
        assert_eq!(
            encoded(mistral, body),
            json!({"model": "m", "max_tokens": 5, "random_seed": 7, "stream": true})
        );
    }

    #[test]
    fn every_preset_is_named_once() {
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(PRESETS[i + 1..].iter().all(|q| q.name != p.name));
        }
        assert!(preset("nope").is_none());
    }
}
