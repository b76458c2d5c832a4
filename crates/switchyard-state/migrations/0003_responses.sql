-- Responses stored by the Responses API (`store`, on by default), per
-- tenant. A response keeps only its own items (its new input, then its
-- output); its history is the chain of responses it continues
-- (previous_response_id), read back with one recursive query, so a long
-- conversation is stored once, not once per turn.

CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    previous_response_id TEXT,
    created_at BIGINT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    -- The response object as served, as JSON (what a retrieve returns).
    body TEXT NOT NULL
);
CREATE INDEX responses_by_tenant ON responses (tenant_id, created_at);

CREATE TABLE response_items (
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    -- Input items first, then output items.
    position BIGINT NOT NULL,
    is_output BIGINT NOT NULL,
    -- A conversation item (switchyard_core::Item) as JSON.
    item TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);

-- The response a request produced, on its ledger row.
ALTER TABLE usage_ledger ADD COLUMN response_id TEXT;
