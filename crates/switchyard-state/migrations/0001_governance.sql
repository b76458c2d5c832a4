-- Tenants, teams, keys, the usage ledger and the audit trail.
--
-- Written once for SQLite and PostgreSQL: TEXT ids, BIGINT Unix
-- milliseconds, DOUBLE PRECISION money, BIGINT 0/1 flags, and JSON kept as
-- TEXT, which both accept and both decode the same way.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    limits TEXT NOT NULL DEFAULT '{}',
    budget TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    limits TEXT NOT NULL DEFAULT '{}',
    budget TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX teams_by_tenant ON teams (tenant_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    team_id TEXT REFERENCES teams (id),
    name TEXT NOT NULL,
    -- SHA-256 of the secret part, hex; the secret itself is never stored.
    secret_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    -- JSON array of model names; NULL allows every model.
    allowed_models TEXT,
    limits TEXT NOT NULL DEFAULT '{}',
    budget TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    expires_at BIGINT,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

-- Rows carry their own id: request ids may come from clients, which can
-- repeat them.
CREATE TABLE usage_ledger (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    tenant_id TEXT,
    team_id TEXT,
    key_id TEXT,
    model TEXT NOT NULL,
    deployment TEXT,
    route TEXT,
    cache_hit BIGINT NOT NULL,
    status BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT
);
CREATE INDEX usage_by_request ON usage_ledger (request_id);
CREATE INDEX usage_by_tenant_time ON usage_ledger (tenant_id, at);
CREATE INDEX usage_by_key_time ON usage_ledger (key_id, at);
CREATE INDEX usage_by_team_time ON usage_ledger (team_id, at);

CREATE TABLE audit_records (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    tenant_id TEXT,
    key_id TEXT,
    status BIGINT NOT NULL,
    -- JSON array of decision steps.
    decisions TEXT NOT NULL,
    -- Masked, and only when the configuration asks for them.
    prompt TEXT,
    answer TEXT
);
CREATE INDEX audit_by_request ON audit_records (request_id);
CREATE INDEX audit_by_tenant_time ON audit_records (tenant_id, at);

CREATE TABLE budget_alerts (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    spent DOUBLE PRECISION NOT NULL,
    budget_limit DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX budget_alerts_once ON budget_alerts (scope, scope_id, period_start, threshold);
CREATE INDEX budget_alerts_by_tenant ON budget_alerts (tenant_id, at);
