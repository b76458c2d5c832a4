//! Switchyard's state layer.
//!
//! - [`SqlStore`]: tenants, teams, API keys, the usage ledger, the audit
//!   trail and budget alerts, in an embedded SQLite file by default or in
//!   PostgreSQL when `database_url` points there; and the responses the
//!   Responses API stores, with their items. Migrations run at start.
//! - [`counters`]: the sliding-window rate counters, concurrency slots and
//!   spend totals that admission control reads and writes on every
//!   request: in process by default, in Redis when several gateway
//!   instances must share them.

mod anomalies;
mod conversations;
pub mod counters;
mod feedback;
pub mod records;
mod responses;
mod store;
mod summaries;
pub mod testing;

pub use conversations::{ConversationItemRow, ConversationRow};
pub use responses::{ItemRow, NewResponse, ResponseRow, ResponseWriter};
pub use store::{
    DatabaseKind, SpendScope, SqlStore, TenantScope, TimeRange, redact_url, sqlite_url,
};

/// What can go wrong in the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode.
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// A group write (of stored responses) failed or could not be made.
    #[error("writing stored responses failed: {0}")]
    Write(String),
    /// A folder could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Redis failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// `YYYY-MM-DD` of the UTC day `days` after 1970-01-01.
pub fn day_name(days: i64) -> String {
    // 2440588 is the Julian day number of 1970-01-01.
    i32::try_from(days + 2_440_588)
        .ok()
        .and_then(|julian| time::Date::from_julian_day(julian).ok())
        .map_or_else(|| format!("day {days}"), |date| date.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_name_utc_dates() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(19_723), "2024-01-01");
        assert_eq!(day_name(19_782), "2024-02-29");
    }
}
