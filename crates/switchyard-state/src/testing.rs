//! Support for tests that run against the real databases: a PostgreSQL
//! schema of their own, so that tests running at once never see each
//! other's rows.

use sqlx::Connection;

use crate::StateError;

/// The environment variable naming the PostgreSQL the tests use.
pub const POSTGRES_ENV: &str = "SWITCHYARD_TEST_DATABASE_URL";

/// The environment variable naming the Redis the tests use.
pub const REDIS_ENV: &str = "SWITCHYARD_TEST_REDIS_URL";

/// Set (to `1`) where the services are part of the run (`.ci/run` sets
/// it): a test that needs PostgreSQL or Redis then fails when it is not
/// configured, instead of being skipped.
pub const REQUIRE_ENV: &str = "SWITCHYARD_REQUIRE_SERVICES";

/// Whether the run requires the services.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The URL the environment variable `env` names for the tests' service;
/// `Ok(None)` when it is not set and the run does not require it, an
/// error when it is required and missing.
pub fn service_url(env: &str) -> Result<Option<String>, String> {
    match std::env::var(env) {
        Ok(url) if !url.trim().is_empty() => Ok(Some(url)),
        _ if services_required() => Err(format!(
            "{REQUIRE_ENV} says the services are required, but {env} is not set"
        )),
        _ => Ok(None),
    }
}

/// Creates a fresh schema in the database at `url` and returns a URL whose
/// connections use it.
pub async fn fresh_postgres_schema(url: &str) -> Result<String, StateError> {
    sqlx::any::install_default_drivers();
    let schema = format!("sy_test_{}", uuid_like());
    let mut connection = sqlx::AnyConnection::connect(url).await?;
    drop_stale_schemas(&mut connection).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Drops test schemas left by runs more than an hour old (tests running
/// now are younger), so the test database does not fill up.
async fn drop_stale_schemas(connection: &mut sqlx::AnyConnection) -> Result<(), StateError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT CAST(schema_name AS TEXT) AS schema_name FROM information_schema.schemata WHERE schema_name LIKE 'sy_test_%'",
    )
    .fetch_all(&mut *connection)
    .await?;
    let now = now_nanos();
    let hour = 3_600_000_000_000u128;
    for row in rows {
        let name: String = row.try_get("schema_name")?;
        let created = name
            .strip_prefix("sy_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|hex| u128::from_str_radix(hex, 16).ok());
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if plain && created.is_some_and(|at| now.saturating_sub(at) > hour) {
            // The name matched the pattern above and holds only
            // [a-z0-9_]: safe to splice.
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *connection)
                .await?;
        }
    }
    Ok(())
}

fn now_nanos() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn uuid_like() -> String {
    let nanos = now_nanos();
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}_{}_{counter}", nanos, std::process::id())
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
