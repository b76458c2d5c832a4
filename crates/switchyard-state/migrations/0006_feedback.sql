-- What users thought of answers (POST /v1/feedback), per tenant, tied to
-- the request's ledger rows by request id, so that usage reports can show
-- it per model, route and deployment.

CREATE TABLE feedback (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    response_id TEXT,
    at BIGINT NOT NULL,
    score DOUBLE PRECISION,
    label TEXT,
    -- Masked by the audit trail's rules.
    comment TEXT
);
CREATE INDEX feedback_by_request ON feedback (tenant_id, request_id);
