//! `clock`: the current date and time, in a time zone of the IANA
//! database (the system's, or the copy built into the binary where the
//! system has none).

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_core::ToolDefinition;

use crate::toolbox::{Tool, ToolError, parse_arguments};

/// Where the clock reads the time (the system clock, or a fixed one in
/// tests).
pub type Now = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The clock tool.
pub struct Clock {
    now: Now,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Clock {
    /// On the system clock.
    pub fn system() -> Self {
        Self::reading(Arc::new(Timestamp::now))
    }

    /// On `now`.
    pub fn reading(now: Now) -> Self {
        Self { now }
    }
}

#[derive(Deserialize)]
struct Arguments {
    #[serde(default)]
    timezone: Option<String>,
}

/// What the model gets back.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reading {
    /// The zone the time is given in.
    pub timezone: String,
    /// Local date and time with offset (RFC 3339).
    pub now: String,
    /// Local date.
    pub date: String,
    /// Local time of day.
    pub time: String,
    /// Day of the week.
    pub weekday: String,
    /// Offset from UTC, e.g. `+01:00`.
    pub utc_offset: String,
}

impl Clock {
    /// The time now in `timezone` (UTC when `None`).
    pub fn read(&self, timezone: Option<&str>) -> Result<Reading, ToolError> {
        let name = timezone
            .map(str::trim)
            .filter(|z| !z.is_empty())
            .unwrap_or("UTC");
        let zone = TimeZone::get(name).map_err(|_| {
            ToolError::Arguments(format!(
                "unknown time zone {name:?}; use an IANA name such as \"Europe/Paris\" or \"UTC\""
            ))
        })?;
        let local = (self.now)().to_zoned_datetime(zone);
        Ok(Reading {
            timezone: name.to_owned(),
            now: local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            date: local.strftime("%Y-%m-%d").to_string(),
            time: local.strftime("%H:%M:%S").to_string(),
            weekday: local.strftime("%A").to_string(),
            utc_offset: local.strftime("%:z").to_string(),
        })
    }
}

impl Tool for Clock {
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "clock".into(),
            description: Some(
                "The current date, time and weekday in a time zone. Use it whenever the answer \
                 depends on today's date or the time."
                    .into(),
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "timezone": {
                        "type": "string",
                        "description": "IANA time zone, e.g. \"Europe/Paris\"; UTC when left out"
                    }
                },
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let Arguments { timezone } = parse_arguments(arguments)?;
            let reading = self.read(timezone.as_deref())?;
            serde_json::to_string(&reading).map_err(|e| ToolError::Failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Clock {
        // 2026-12-04T15:30:00Z, a Friday.
        let at = Timestamp::from_second(1_796_398_200).unwrap_or(Timestamp::UNIX_EPOCH);
        Clock::reading(Arc::new(move || at))
    }

    #[test]
    fn reads_the_time_in_a_zone_with_its_offset() {
        let clock = fixed();
        let utc = clock.read(None).unwrap();
        assert_eq!(utc.now, "2026-12-04T15:30:00+00:00");
        assert_eq!(utc.weekday, "Friday");
        let paris = clock.read(Some("Europe/Paris")).unwrap();
        assert_eq!(paris.time, "16:30:00");
        assert_eq!(paris.utc_offset, "+01:00");
        let tokyo = clock.read(Some("Asia/Tokyo")).unwrap();
        assert_eq!(tokyo.date, "2026-12-05");
        assert_eq!(tokyo.time, "00:30:00");
    }

    #[test]
    fn an_unknown_zone_is_an_argument_error() {
        assert!(matches!(
            fixed().read(Some("Mars/Olympus")),
            Err(ToolError::Arguments(_))
        ));
    }
}
