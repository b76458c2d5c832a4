//! Support for tests that run against the real databases: a PostgreSQL
//! schema of their own, so that tests running at once never see each
//! other's rows.

use sqlx::Connection;

use crate::StateError;

/// The environment variable naming the PostgreSQL the tests use.
pub const POSTGRES_ENV: &str = "SWITCHYARD_TEST_DATABASE_URL";

/// The environment variable naming the Redis the tests use.
pub const REDIS_ENV: &str = "SWITCHYARD_TEST_REDIS_URL";

/// Creates a fresh schema in the database at `url` and returns a URL whose
/// connections use it.
pub async fn fresh_postgres_schema(url: &str) -> Result<String, StateError> {
    sqlx::any::install_default_drivers();
    let schema = format!("sy_test_{}", uuid_like());
    let mut connection = sqlx::AnyConnection::connect(url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}_{}_{counter}", nanos, std::process::id())
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
