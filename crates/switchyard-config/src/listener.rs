//! The `[listener]` table: what one client may hold of the server.

use serde::Deserialize;

use crate::FieldProblem;

/// Limits on the listener's connections. The defaults hold against idle
/// and slow-header floods on a small machine: a flood fills the connection
/// slots at most, and idle or slow connections give up their slots to new
/// ones (see `max_connections`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Connections served at once (TLS handshakes in progress included).
    /// At the cap the server stops accepting (waiting clients queue in the
    /// kernel) and closes connections idle for a second or more to make
    /// room; a connection with a request in flight is never cut.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds an HTTP/1.1 client gets to send a request's complete
    /// headers. The clock also runs while a kept-alive connection waits for
    /// its next request, so it bounds idle HTTP/1.1 connections too.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight
    /// (HTTP/1.1 and HTTP/2) before the server closes it.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Requests one HTTP/2 connection may have in flight at once.
    #[serde(default = "default_http2_max_streams")]
    pub http2_max_streams: u32,
    /// Seconds a write to a client may wait (a client that stops reading a
    /// stream, or its network gone) before its connection is closed.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            idle_timeout_secs: default_idle_timeout_secs(),
            http2_max_streams: default_http2_max_streams(),
            write_timeout_secs: default_write_timeout_secs(),
        }
    }
}

impl ListenerConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldProblem> {
        let at_least_one = [
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("http2_max_streams", u64::from(self.http2_max_streams)),
            ("write_timeout_secs", self.write_timeout_secs),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err((format!("listener.{name}"), "must be at least 1".into()));
            }
        }
        // Connection slots are counted with a semaphore of this size.
        if self.max_connections > u32::MAX as usize >> 3 {
            return Err((
                "listener.max_connections".into(),
                format!("must be at most {}", u32::MAX >> 3),
            ));
        }
        Ok(())
    }
}

// A connection costs a descriptor and a few KiB; 4096 stays under common
// descriptor limits with room for upstream connections and files.
fn default_max_connections() -> usize {
    4096
}
// nginx's defaults (client_header_timeout 60 s, keepalive_timeout 75 s).
// Closing kept-alive connections sooner races clients that reuse pooled
// connections after a pause (a request sent as the close arrives fails);
// floods are handled at the cap, not by short timeouts.
fn default_header_read_timeout_secs() -> u64 {
    60
}
fn default_idle_timeout_secs() -> u64 {
    75
}
fn default_http2_max_streams() -> u32 {
    128
}
fn default_write_timeout_secs() -> u64 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_by_name() {
        let config = ListenerConfig {
            idle_timeout_secs: 0,
            ..ListenerConfig::default()
        };
        let (field, _) = config.validate().unwrap_err();
        assert_eq!(field, "listener.idle_timeout_secs");
        let config = ListenerConfig {
            max_connections: usize::MAX,
            ..ListenerConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().0, "listener.max_connections");
        assert!(ListenerConfig::default().validate().is_ok());
    }
}
