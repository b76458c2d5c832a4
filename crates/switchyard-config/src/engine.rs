//! The `[engine]` table (what local chat models share) and each local
//! model's `keep_alive`.

use std::time::Duration;

use serde::Deserialize;

/// The `[engine]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Memory every local chat model together may hold (weights, KV cache
    /// and compute buffers, as estimated from each model's file and
    /// settings): `"6 GiB"`, `"800 MB"` or a number of bytes. Loading a
    /// model that would pass it first unloads the least recently used idle
    /// ones. `None`: no limit.
    #[serde(default, deserialize_with = "byte_size")]
    pub max_memory: Option<u64>,
}

fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|size| Some(size.as_u64()))
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "{error}; write a size such as \"6 GiB\", \"800 MB\" or a number of bytes"
                ))
            }),
    }
}

/// How long a local model stays loaded after its last request (Ollama's
/// `keep_alive`): a duration (`"5m"`, `"1h"`, or seconds), `0` to unload
/// at once, a negative value (`-1`) to keep it until its memory is needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeepAlive {
    /// Until another model needs the memory (the default).
    #[default]
    Forever,
    /// This long after the last request ends.
    After(Duration),
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Seconds(i64),
            Text(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Seconds(seconds) if seconds < 0 => Ok(Self::Forever),
            Given::Seconds(seconds) => Ok(Self::After(Duration::from_secs(seconds.unsigned_abs()))),
            Given::Text(text) if text.trim_start().starts_with('-') => Ok(Self::Forever),
            Given::Text(text) => humantime::parse_duration(text.trim())
                .map(Self::After)
                .map_err(|error| {
                    serde::de::Error::custom(format!(
                        "{error}; write a duration such as \"5m\" or \"30s\", 0 to unload at once, or -1 to keep the model loaded"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        keep_alive: KeepAlive,
    }

    fn keep_alive(value: &str) -> Result<KeepAlive, String> {
        toml::from_str::<Probe>(&format!("keep_alive = {value}"))
            .map(|p| p.keep_alive)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keep_alive_reads_durations_seconds_zero_and_negative_as_ollama_does() {
        assert_eq!(
            keep_alive("\"5m\"").unwrap(),
            KeepAlive::After(Duration::from_secs(300))
        );
        assert_eq!(
            keep_alive("30").unwrap(),
            KeepAlive::After(Duration::from_secs(30))
        );
        assert_eq!(keep_alive("0").unwrap(), KeepAlive::After(Duration::ZERO));
        assert_eq!(keep_alive("-1").unwrap(), KeepAlive::Forever);
        assert_eq!(keep_alive("\"-1m\"").unwrap(), KeepAlive::Forever);
        let error = keep_alive("\"soon\"").unwrap_err();
        assert!(error.contains("write a duration"), "{error}");
    }

    #[test]
    fn max_memory_reads_sizes_with_units_or_bytes() {
        let settings: EngineSettings = toml::from_str("max_memory = \"1.5 GiB\"").unwrap();
        assert_eq!(settings.max_memory, Some(1_610_612_736));
        let settings: EngineSettings = toml::from_str("max_memory = 1000").unwrap();
        assert_eq!(settings.max_memory, Some(1000));
        let error = toml::from_str::<EngineSettings>("max_memory = \"lots\"").unwrap_err();
        assert!(error.to_string().contains("write a size"), "{error}");
        let settings: EngineSettings = toml::from_str("").unwrap();
        assert_eq!(settings.max_memory, None);
    }
}
