-- Summaries of the oldest turns of conversations too long for their
-- model's context window ([context] fit = "summarize"), per tenant, keyed
-- by a hash of the turns they stand for, so that later turns of the same
-- conversation reuse them instead of writing them again.

CREATE TABLE context_summaries (
    tenant_id TEXT NOT NULL,
    prefix_hash TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, prefix_hash)
);
