//! The SQL store: SQLite (the embedded default) or PostgreSQL, chosen by
//! the URL, through sqlx's `Any` driver.
//!
//! Every query is written once in the SQL both databases speak (`$n`
//! parameters, `ON CONFLICT`, integer milliseconds, JSON as text), so the
//! two cannot drift apart; the test suite runs against both.
//!
//! Tenant isolation is structural: every read or write of a tenant-owned
//! object takes a [`TenantScope`] and filters on it in SQL, so a caller
//! scoped to one tenant cannot name another's object into existence.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, Transaction};
use tracing::info;

use crate::StateError;

/// How long a request waits for a PostgreSQL connection (see `open`).
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
use crate::records::{
    ApiKey, AuditRow, BudgetAlert, Team, Tenant, UsageGroup, UsageLine, UsageRow,
};

/// Which tenants' objects a call may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant's (the master key).
    All,
    /// One tenant's only.
    Tenant(String),
}

impl TenantScope {
    /// The tenant filter as a bind value: `NULL` matches every tenant.
    pub(crate) fn filter(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Tenant(id) => Some(id),
        }
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Filters of a usage report or audit listing.
#[derive(Debug, Clone, Default)]
pub struct TimeRange {
    /// Unix milliseconds, inclusive.
    pub from: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub to: Option<i64>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    kind: DatabaseKind,
}

/// The migrations, embedded: the binary carries its schema.
const MIGRATIONS: [(i64, &str, &str); 8] = [
    (
        1,
        "governance",
        include_str!("../migrations/0001_governance.sql"),
    ),
    (
        2,
        "guardrails",
        include_str!("../migrations/0002_guardrails.sql"),
    ),
    (
        3,
        "responses",
        include_str!("../migrations/0003_responses.sql"),
    ),
    (
        4,
        "conversations",
        include_str!("../migrations/0004_conversations.sql"),
    ),
    (
        5,
        "summaries",
        include_str!("../migrations/0005_summaries.sql"),
    ),
    (
        6,
        "feedback",
        include_str!("../migrations/0006_feedback.sql"),
    ),
    (
        7,
        "anomalies",
        include_str!("../migrations/0007_anomalies.sql"),
    ),
    (
        8,
        "client certificates",
        include_str!("../migrations/0008_client_certificates.sql"),
    ),
];

fn migrator() -> Migrator {
    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The URL of the SQLite file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("switchyard.db").display())
}

impl SqlStore {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a
    /// SQLite file and its folder when missing, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DatabaseKind::Postgres
        } else {
            return Err(StateError::Config(format!(
                "database_url must start with sqlite:// or postgres://, not {:?}",
                redact_url(url)
            )));
        };
        let pool = match kind {
            DatabaseKind::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                // WAL lets the ledger writer and readers work at once;
                // synchronous=FULL makes a committed batch survive power
                // loss, not only a killed process. One writer connection
                // would be enough; a few let reads proceed beside it.
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = FULL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            // 32 MiB of page cache: the ledger's indexes
                            // stay in memory instead of being re-read.
                            sqlx::query("PRAGMA cache_size = -32768")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
                    .await
            }
            DatabaseKind::Postgres => {
                // While PostgreSQL is gone the pool keeps retrying refused
                // connections until this deadline: it is how long a
                // request that needs the database waits before its 503.
                // Queries take milliseconds, so a healthy pool never
                // makes anyone wait this long for a connection.
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await
            }
        }
        .map_err(|source| StateError::Connect {
            url: redact_url(url),
            source,
        })?;
        migrator().run(&pool).await?;
        info!(database = ?kind, "state store ready; migrations applied");
        Ok(Self { pool, kind })
    }

    /// Begins a transaction that writes, on `connection`. On SQLite it
    /// takes the write lock at once (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads first and writes later fails at once with
    /// "database is locked" when another connection commits in between (in
    /// WAL mode its snapshot is stale, and the busy timeout does not apply),
    /// where an immediate one waits its turn under the busy timeout.
    pub(crate) async fn begin_write<'c>(
        &self,
        connection: &'c mut AnyConnection,
    ) -> Result<Transaction<'c, Any>, sqlx::Error> {
        match self.kind {
            DatabaseKind::Sqlite => connection.begin_with("BEGIN IMMEDIATE").await,
            DatabaseKind::Postgres => connection.begin().await,
        }
    }

    /// Which database this is.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// Closes the pool after in-progress queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tenants ----

    /// Stores a new tenant.
    pub async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO tenants (id, name, disabled, limits, budget, metadata, created_at, updated_at, guardrails)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(i64::from(tenant.disabled))
        .bind(to_json(&tenant.limits)?)
        .bind(tenant.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&tenant.metadata)?)
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .bind(to_json(&tenant.guardrails)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a tenant's mutable fields; false when it is not in scope.
    pub async fn update_tenant(
        &self,
        scope: &TenantScope,
        tenant: &Tenant,
    ) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE tenants SET name = $1, disabled = $2, limits = $3, budget = $4, metadata = $5, updated_at = $6, guardrails = $9
             WHERE id = $7 AND ($8 IS NULL OR id = $8)",
        )
        .bind(&tenant.name)
        .bind(i64::from(tenant.disabled))
        .bind(to_json(&tenant.limits)?)
        .bind(tenant.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&tenant.metadata)?)
        .bind(tenant.updated_at)
        .bind(&tenant.id)
        .bind(scope.filter())
        .bind(to_json(&tenant.guardrails)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant `id`, if it is in scope.
    pub async fn tenant(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<Tenant>, StateError> {
        let row = sqlx::query(
            "SELECT id, name, disabled, limits, budget, metadata, created_at, updated_at, guardrails
             FROM tenants WHERE id = $1 AND ($2 IS NULL OR id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| tenant_from(&row)).transpose()
    }

    /// The tenants in scope, oldest first.
    pub async fn tenants(&self, scope: &TenantScope) -> Result<Vec<Tenant>, StateError> {
        let rows = sqlx::query(
            "SELECT id, name, disabled, limits, budget, metadata, created_at, updated_at, guardrails
             FROM tenants WHERE ($1 IS NULL OR id = $1) ORDER BY created_at, id",
        )
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_from).collect()
    }

    // ---- teams ----

    /// Stores a new team.
    pub async fn insert_team(&self, team: &Team) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO teams (id, tenant_id, name, disabled, limits, budget, metadata, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&team.id)
        .bind(&team.tenant_id)
        .bind(&team.name)
        .bind(i64::from(team.disabled))
        .bind(to_json(&team.limits)?)
        .bind(team.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&team.metadata)?)
        .bind(team.created_at)
        .bind(team.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a team's mutable fields; false when it is not in scope.
    pub async fn update_team(&self, scope: &TenantScope, team: &Team) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE teams SET name = $1, disabled = $2, limits = $3, budget = $4, metadata = $5, updated_at = $6
             WHERE id = $7 AND ($8 IS NULL OR tenant_id = $8)",
        )
        .bind(&team.name)
        .bind(i64::from(team.disabled))
        .bind(to_json(&team.limits)?)
        .bind(team.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&team.metadata)?)
        .bind(team.updated_at)
        .bind(&team.id)
        .bind(scope.filter())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The team `id`, if it is in scope.
    pub async fn team(&self, scope: &TenantScope, id: &str) -> Result<Option<Team>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, disabled, limits, budget, metadata, created_at, updated_at
             FROM teams WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| team_from(&row)).transpose()
    }

    /// The teams in scope, oldest first.
    pub async fn teams(&self, scope: &TenantScope) -> Result<Vec<Team>, StateError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, disabled, limits, budget, metadata, created_at, updated_at
             FROM teams WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY created_at, id",
        )
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(team_from).collect()
    }

    // ---- keys ----

    /// Stores a new key.
    pub async fn insert_key(&self, key: &ApiKey) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, team_id, name, secret_hash, role, allowed_models, limits, budget, metadata, expires_at, disabled, created_at, updated_at, guardrails, client_certificate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(key.team_id.as_deref())
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.role.as_str())
        .bind(key.allowed_models.as_ref().map(to_json).transpose()?)
        .bind(to_json(&key.limits)?)
        .bind(key.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&key.metadata)?)
        .bind(key.expires_at)
        .bind(i64::from(key.disabled))
        .bind(key.created_at)
        .bind(key.updated_at)
        .bind(to_json(&key.guardrails)?)
        .bind(key.client_certificate.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a key's mutable fields; false when it is not in scope.
    pub async fn update_key(&self, scope: &TenantScope, key: &ApiKey) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE api_keys SET name = $1, role = $2, allowed_models = $3, limits = $4, budget = $5, metadata = $6, expires_at = $7, disabled = $8, updated_at = $9, guardrails = $12, client_certificate = $13
             WHERE id = $10 AND ($11 IS NULL OR tenant_id = $11)",
        )
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(key.allowed_models.as_ref().map(to_json).transpose()?)
        .bind(to_json(&key.limits)?)
        .bind(key.budget.as_ref().map(to_json).transpose()?)
        .bind(to_json(&key.metadata)?)
        .bind(key.expires_at)
        .bind(i64::from(key.disabled))
        .bind(key.updated_at)
        .bind(&key.id)
        .bind(scope.filter())
        .bind(to_json(&key.guardrails)?)
        .bind(key.client_certificate.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The key `id`, if it is in scope.
    pub async fn key(&self, scope: &TenantScope, id: &str) -> Result<Option<ApiKey>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, team_id, name, secret_hash, role, allowed_models, limits, budget, metadata, expires_at, disabled, created_at, updated_at, guardrails, client_certificate
             FROM api_keys WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| key_from(&row)).transpose()
    }

    /// The key that client certificate `name` stands for, in any tenant.
    pub async fn key_for_client_certificate(
        &self,
        name: &str,
    ) -> Result<Option<ApiKey>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, team_id, name, secret_hash, role, allowed_models, limits, budget, metadata, expires_at, disabled, created_at, updated_at, guardrails, client_certificate
             FROM api_keys WHERE client_certificate = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| key_from(&row)).transpose()
    }

    /// The keys in scope, oldest first.
    pub async fn keys(&self, scope: &TenantScope) -> Result<Vec<ApiKey>, StateError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, team_id, name, secret_hash, role, allowed_models, limits, budget, metadata, expires_at, disabled, created_at, updated_at, guardrails, client_certificate
             FROM api_keys WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY created_at, id",
        )
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from).collect()
    }

    // ---- ledger and audit ----

    /// Writes a batch of ledger rows and audit records in one transaction.
    /// Rows already present (a retried batch) are skipped, so writing a
    /// batch twice never duplicates a request. Rows go in multi-row
    /// `INSERT`s: one statement per row would make the writer the
    /// bottleneck of a busy gateway.
    pub async fn append(&self, usage: &[UsageRow], audit: &[AuditRow]) -> Result<(), StateError> {
        let mut connection = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut connection).await?;
        for chunk in usage.chunks(ROWS_PER_INSERT) {
            let sql = multi_row_insert(
                self.kind,
                "INSERT INTO usage_ledger (id, request_id, at, tenant_id, team_id, key_id, model, deployment, route, cache_hit, status, input_tokens, output_tokens, cached_tokens, cost, latency_ms, ttft_ms, response_id) VALUES",
                18,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(&row.id)
                    .bind(&row.request_id)
                    .bind(row.at)
                    .bind(row.tenant_id.as_deref())
                    .bind(row.team_id.as_deref())
                    .bind(row.key_id.as_deref())
                    .bind(&row.model)
                    .bind(row.deployment.as_deref())
                    .bind(row.route.as_deref())
                    .bind(i64::from(row.cache_hit))
                    .bind(i64::from(row.status))
                    .bind(to_i64(row.input_tokens))
                    .bind(to_i64(row.output_tokens))
                    .bind(to_i64(row.cached_tokens))
                    .bind(row.cost)
                    .bind(to_i64(row.latency_ms))
                    .bind(row.ttft_ms.map(to_i64))
                    .bind(row.response_id.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        for chunk in audit.chunks(ROWS_PER_INSERT) {
            let sql = multi_row_insert(
                self.kind,
                "INSERT INTO audit_records (id, request_id, at, tenant_id, key_id, status, decisions, prompt, answer) VALUES",
                9,
                chunk.len(),
            );
            let decisions = chunk
                .iter()
                .map(|row| to_json(&row.decisions))
                .collect::<Result<Vec<_>, _>>()?;
            let mut query = sqlx::query(&sql);
            for (row, decisions) in chunk.iter().zip(decisions) {
                query = query
                    .bind(&row.id)
                    .bind(&row.request_id)
                    .bind(row.at)
                    .bind(row.tenant_id.as_deref())
                    .bind(row.key_id.as_deref())
                    .bind(i64::from(row.status))
                    .bind(decisions)
                    .bind(row.prompt.as_deref())
                    .bind(row.answer.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ledger rows of one request id, in scope.
    pub async fn usage_of_request(
        &self,
        scope: &TenantScope,
        request_id: &str,
    ) -> Result<Vec<UsageRow>, StateError> {
        let rows = sqlx::query(
            "SELECT id, request_id, at, tenant_id, team_id, key_id, model, deployment, route, cache_hit, status, input_tokens, output_tokens, cached_tokens, cost, latency_ms, ttft_ms, response_id
             FROM usage_ledger WHERE request_id = $1 AND ($2 IS NULL OR tenant_id = $2) ORDER BY at, id",
        )
        .bind(request_id)
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_from).collect()
    }

    /// Number of ledger rows in scope (all time).
    pub async fn usage_count(&self, scope: &TenantScope) -> Result<u64, StateError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM usage_ledger WHERE ($1 IS NULL OR tenant_id = $1)",
        )
        .bind(scope.filter())
        .fetch_one(&self.pool)
        .await?;
        Ok(from_i64(row.try_get::<i64, _>("n")?))
    }

    /// Requests, tokens and spend in scope and time range, grouped.
    pub async fn usage_report(
        &self,
        scope: &TenantScope,
        range: &TimeRange,
        group: UsageGroup,
    ) -> Result<Vec<UsageLine>, StateError> {
        self.usage_lines(scope, None, range, group).await
    }

    /// Like [`SqlStore::usage_report`], narrowed to one key's requests.
    pub async fn key_usage_report(
        &self,
        scope: &TenantScope,
        key_id: &str,
        range: &TimeRange,
        group: UsageGroup,
    ) -> Result<Vec<UsageLine>, StateError> {
        self.usage_lines(scope, Some(key_id), range, group).await
    }

    async fn usage_lines(
        &self,
        scope: &TenantScope,
        key_id: Option<&str>,
        range: &TimeRange,
        group: UsageGroup,
    ) -> Result<Vec<UsageLine>, StateError> {
        // The grouping column comes from a closed enum, never from input.
        let column = group.column();
        // Feedback joins its request's row: what users thought of each
        // group's answers.
        let sql = format!(
            "SELECT {column} AS grp, COUNT(*) AS requests,
                    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens,
                    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens,
                    CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens,
                    CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS cost,
                    CAST(COALESCE(SUM(f.given), 0) AS BIGINT) AS feedback,
                    CAST(COALESCE(SUM(f.scored), 0) AS BIGINT) AS scored,
                    CAST(COALESCE(SUM(f.total), 0) AS DOUBLE PRECISION) AS score_total
             FROM usage_ledger
             LEFT JOIN (SELECT tenant_id AS f_tenant, request_id AS f_request, COUNT(*) AS given,
                               COUNT(score) AS scored, SUM(score) AS total
                        FROM feedback GROUP BY tenant_id, request_id) f
               ON f.f_request = usage_ledger.request_id
              AND f.f_tenant = COALESCE(usage_ledger.tenant_id, '')
             WHERE ($1 IS NULL OR tenant_id = $1) AND at >= $2 AND at < $3
               AND ($4 IS NULL OR key_id = $4)
             GROUP BY {column} ORDER BY {column}"
        );
        let rows = sqlx::query(&sql)
            .bind(scope.filter())
            .bind(range.from.unwrap_or(i64::MIN))
            .bind(range.to.unwrap_or(i64::MAX))
            .bind(key_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let group_value = if group == UsageGroup::Day {
                    row.try_get::<Option<i64>, _>("grp")?.map(crate::day_name)
                } else {
                    row.try_get::<Option<String>, _>("grp")?
                };
                Ok(UsageLine {
                    group: group_value,
                    requests: from_i64(row.try_get("requests")?),
                    input_tokens: from_i64(row.try_get("input_tokens")?),
                    output_tokens: from_i64(row.try_get("output_tokens")?),
                    cached_tokens: from_i64(row.try_get("cached_tokens")?),
                    cost: row.try_get("cost")?,
                    feedback: from_i64(row.try_get("feedback")?),
                    mean_score: {
                        let scored: i64 = row.try_get("scored")?;
                        let total: f64 = row.try_get("score_total")?;
                        (scored > 0).then(|| total / scored as f64)
                    },
                })
            })
            .collect()
    }

    /// Spend of one key, team or tenant since `since` (Unix ms).
    pub async fn spend_since(
        &self,
        scope_column: SpendScope,
        id: &str,
        since: i64,
    ) -> Result<f64, StateError> {
        let column = scope_column.column();
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS spent
             FROM usage_ledger WHERE {column} = $1 AND at >= $2"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("spent")?)
    }

    /// Audit records of one request id, in scope.
    pub async fn audit_of_request(
        &self,
        scope: &TenantScope,
        request_id: &str,
    ) -> Result<Vec<AuditRow>, StateError> {
        let rows = sqlx::query(
            "SELECT id, request_id, at, tenant_id, key_id, status, decisions, prompt, answer
             FROM audit_records WHERE request_id = $1 AND ($2 IS NULL OR tenant_id = $2) ORDER BY at, id",
        )
        .bind(request_id)
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from).collect()
    }

    /// Audit records in scope and time range, newest first, at most `limit`.
    pub async fn audit_records(
        &self,
        scope: &TenantScope,
        range: &TimeRange,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StateError> {
        let rows = sqlx::query(
            "SELECT id, request_id, at, tenant_id, key_id, status, decisions, prompt, answer
             FROM audit_records WHERE ($1 IS NULL OR tenant_id = $1) AND at >= $2 AND at < $3
             ORDER BY at DESC, id LIMIT $4",
        )
        .bind(scope.filter())
        .bind(range.from.unwrap_or(i64::MIN))
        .bind(range.to.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from).collect()
    }

    // ---- budget alerts ----

    /// Records a crossed threshold; false when this threshold was already
    /// recorded for the period (by this or another instance).
    pub async fn insert_alert(&self, alert: &BudgetAlert) -> Result<bool, StateError> {
        let done = sqlx::query(
            "INSERT INTO budget_alerts (id, at, tenant_id, scope, scope_id, period_start, threshold, spent, budget_limit)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (scope, scope_id, period_start, threshold) DO NOTHING",
        )
        .bind(&alert.id)
        .bind(alert.at)
        .bind(&alert.tenant_id)
        .bind(&alert.scope)
        .bind(&alert.scope_id)
        .bind(alert.period_start)
        .bind(alert.threshold)
        .bind(alert.spent)
        .bind(alert.budget_limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Alerts in scope, newest first.
    pub async fn alerts(&self, scope: &TenantScope) -> Result<Vec<BudgetAlert>, StateError> {
        let rows = sqlx::query(
            "SELECT id, at, tenant_id, scope, scope_id, period_start, threshold, spent, budget_limit
             FROM budget_alerts WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY at DESC, id",
        )
        .bind(scope.filter())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BudgetAlert {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    tenant_id: row.try_get("tenant_id")?,
                    scope: row.try_get("scope")?,
                    scope_id: row.try_get("scope_id")?,
                    period_start: row.try_get("period_start")?,
                    threshold: row.try_get("threshold")?,
                    spent: row.try_get("spent")?,
                    budget_limit: row.try_get("budget_limit")?,
                })
            })
            .collect()
    }
}

/// Whose spend a budget sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendScope {
    /// A tenant's.
    Tenant,
    /// A team's.
    Team,
    /// A key's.
    Key,
}

impl SpendScope {
    fn column(self) -> &'static str {
        match self {
            Self::Tenant => "tenant_id",
            Self::Team => "team_id",
            Self::Key => "key_id",
        }
    }

    /// `tenant`, `team` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Team => "team",
            Self::Key => "key",
        }
    }
}

/// Rows per multi-row `INSERT`: 17 columns × 100 stays far below both
/// databases' limits on bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// `prefix ($1, …, $n), (…), …` for `rows` rows of `columns` values.
/// SQLite gets anonymous `?` parameters: it looks a numbered parameter's
/// name up by a linear scan, which makes binding a large statement's `$n`
/// parameters quadratic (measured: 18% of the gateway's CPU under load).
pub(crate) fn placeholder_rows(
    kind: DatabaseKind,
    prefix: &str,
    columns: usize,
    rows: usize,
) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * columns * 5 + 32);
    sql.push_str(prefix);
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { " (" } else { ", (" });
        for column in 0..columns {
            n += 1;
            if column > 0 {
                sql.push_str(", ");
            }
            match kind {
                DatabaseKind::Sqlite => sql.push('?'),
                DatabaseKind::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// [`placeholder_rows`] that skips rows already present (a retried batch).
fn multi_row_insert(kind: DatabaseKind, prefix: &str, columns: usize, rows: usize) -> String {
    let mut sql = placeholder_rows(kind, prefix, columns, rows);
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// Hides a password in a database URL before it reaches a message.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt(format!("{what}: {e}")))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<Option<T>, StateError> {
    row.try_get::<Option<String>, _>(column)?
        .map(|text| from_json(&text, column))
        .transpose()
}

fn tenant_from(row: &AnyRow) -> Result<Tenant, StateError> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        limits: from_json(&row.try_get::<String, _>("limits")?, "limits")?,
        budget: optional_json(row, "budget")?,
        metadata: from_json(&row.try_get::<String, _>("metadata")?, "metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        guardrails: from_json(&row.try_get::<String, _>("guardrails")?, "guardrails")?,
    })
}

fn team_from(row: &AnyRow) -> Result<Team, StateError> {
    Ok(Team {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        limits: from_json(&row.try_get::<String, _>("limits")?, "limits")?,
        budget: optional_json(row, "budget")?,
        metadata: from_json(&row.try_get::<String, _>("metadata")?, "metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_from(row: &AnyRow) -> Result<ApiKey, StateError> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        role: crate::records::Role::parse(&role)
            .ok_or_else(|| StateError::Corrupt(format!("unknown role {role:?}")))?,
        allowed_models: optional_json(row, "allowed_models")?,
        limits: from_json(&row.try_get::<String, _>("limits")?, "limits")?,
        budget: optional_json(row, "budget")?,
        metadata: from_json(&row.try_get::<String, _>("metadata")?, "metadata")?,
        expires_at: row.try_get("expires_at")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        guardrails: from_json(&row.try_get::<String, _>("guardrails")?, "guardrails")?,
        client_certificate: row.try_get("client_certificate")?,
    })
}

fn usage_from(row: &AnyRow) -> Result<UsageRow, StateError> {
    Ok(UsageRow {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        team_id: row.try_get("team_id")?,
        key_id: row.try_get("key_id")?,
        model: row.try_get("model")?,
        deployment: row.try_get("deployment")?,
        route: row.try_get("route")?,
        cache_hit: row.try_get::<i64, _>("cache_hit")? != 0,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        input_tokens: from_i64(row.try_get("input_tokens")?),
        output_tokens: from_i64(row.try_get("output_tokens")?),
        cached_tokens: from_i64(row.try_get("cached_tokens")?),
        cost: row.try_get("cost")?,
        latency_ms: from_i64(row.try_get("latency_ms")?),
        ttft_ms: row.try_get::<Option<i64>, _>("ttft_ms")?.map(from_i64),
        response_id: row.try_get("response_id")?,
    })
}

fn audit_from(row: &AnyRow) -> Result<AuditRow, StateError> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        decisions: from_json(&row.try_get::<String, _>("decisions")?, "decisions")?,
        prompt: row.try_get("prompt")?,
        answer: row.try_get("answer")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_every_parameter() {
        assert_eq!(
            multi_row_insert(DatabaseKind::Postgres, "INSERT INTO t (a, b) VALUES", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT (id) DO NOTHING"
        );
        assert_eq!(
            multi_row_insert(DatabaseKind::Sqlite, "INSERT INTO t (a, b) VALUES", 2, 1),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
