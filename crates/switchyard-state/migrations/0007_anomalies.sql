-- Drift and anomaly alarms: a point of a tenant × model series (error
-- rate, latency, tokens, cost, refusals, answer length) far outside its
-- own baseline. An alert is open until the series returns inside its
-- limits or settles at a new level.

CREATE TABLE anomaly_alerts (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- NULL: requests made without a tenant (open mode, the master key).
    tenant_id TEXT,
    model TEXT NOT NULL,
    signal TEXT NOT NULL,
    observed DOUBLE PRECISION NOT NULL,
    baseline DOUBLE PRECISION NOT NULL,
    bound DOUBLE PRECISION NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    points BIGINT NOT NULL,
    resolved_at BIGINT,
    resolution TEXT
);
CREATE INDEX anomaly_alerts_by_tenant ON anomaly_alerts (tenant_id, at);
