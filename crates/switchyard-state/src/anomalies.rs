//! Drift and anomaly alarms, kept for `/admin/alerts`.

use sqlx::Row;

use crate::StateError;
use crate::records::AnomalyAlert;
use crate::store::{SqlStore, TenantScope};

impl SqlStore {
    /// Keeps a raised alarm.
    pub async fn insert_anomaly(&self, alert: &AnomalyAlert) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO anomaly_alerts
                (id, at, tenant_id, model, signal, observed, baseline, bound, score, points)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&alert.id)
        .bind(alert.at)
        .bind(alert.tenant_id.as_deref())
        .bind(&alert.model)
        .bind(&alert.signal)
        .bind(alert.observed)
        .bind(alert.baseline)
        .bind(alert.bound)
        .bind(alert.score)
        .bind(i64::from(alert.points))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks alarm `id` resolved at `at`, `how` it was.
    pub async fn resolve_anomaly(&self, id: &str, at: i64, how: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE anomaly_alerts SET resolved_at = $1, resolution = $2
             WHERE id = $3 AND resolved_at IS NULL",
        )
        .bind(at)
        .bind(how)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Alarms in scope, newest first, at most `limit`. A tenant's scope
    /// never sees the alarms of requests made without a tenant.
    pub async fn anomalies(
        &self,
        scope: &TenantScope,
        limit: u32,
    ) -> Result<Vec<AnomalyAlert>, StateError> {
        let rows = sqlx::query(
            "SELECT id, at, tenant_id, model, signal, observed, baseline, bound, score, points,
                    resolved_at, resolution
             FROM anomaly_alerts WHERE ($1 IS NULL OR tenant_id = $1)
             ORDER BY at DESC, id LIMIT $2",
        )
        .bind(scope.filter())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let points: i64 = row.try_get("points")?;
                Ok(AnomalyAlert {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    tenant_id: row.try_get("tenant_id")?,
                    model: row.try_get("model")?,
                    signal: row.try_get("signal")?,
                    observed: row.try_get("observed")?,
                    baseline: row.try_get("baseline")?,
                    bound: row.try_get("bound")?,
                    score: row.try_get("score")?,
                    points: u32::try_from(points).unwrap_or(u32::MAX),
                    resolved_at: row.try_get("resolved_at")?,
                    resolution: row.try_get("resolution")?,
                })
            })
            .collect()
    }
}
