-- Conversations (the Responses API's `conversation`): an ordered list of
-- items per tenant that responses created in it append their input and
-- output to.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- When an item was last added (retention counts from here).
    updated_at BIGINT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX conversations_by_tenant ON conversations (tenant_id, created_at);

CREATE TABLE conversation_items (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    -- A conversation item (switchyard_core::Item) as JSON.
    item TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
-- Not unique: a client may send an item again (a function call it got
-- back as output, say); a lookup by id finds the first.
CREATE INDEX conversation_items_by_id ON conversation_items (conversation_id, item_id);

-- The conversation a response was created in.
ALTER TABLE responses ADD COLUMN conversation_id TEXT;
