-- The client certificate a key stands for: a caller that shows it over
-- mutual TLS is that key (its tenant, role, limits) without sending the
-- key. One certificate name names at most one key.
ALTER TABLE api_keys ADD COLUMN client_certificate TEXT;
CREATE UNIQUE INDEX api_keys_client_certificate ON api_keys (client_certificate);
