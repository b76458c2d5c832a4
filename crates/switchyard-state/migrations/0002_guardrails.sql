-- Guardrail policies attached to a tenant or a key (JSON lists of policy
-- names from the configuration's [guardrails.policies]).
ALTER TABLE tenants ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]';
