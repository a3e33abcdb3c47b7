-- API keys of a tenant. The secret (`tsk_…`) is shown once; only its SHA-256 is kept.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- the key's first characters (`tsk_` and 6 more), shown in listings to recognise it
    hint          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    -- space-separated tenant permissions (a subset of the creator's at creation)
    permissions   TEXT NOT NULL,
    -- space-separated CIDRs the key may be used from; NULL: wherever the tenant allows
    allowed_cidrs TEXT,
    created_by    TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    -- set when the key was rotated: the key that replaces it (this one expires after the overlap)
    rotated_to    TEXT,
    last_used_at  BIGINT,
    last_used_ip  TEXT
);
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id);

-- Email domains claimed by enterprise tenants. Once a system administrator has verified a
-- domain, users with a verified address there join the tenant at login with `default_role`.
CREATE TABLE tenant_domains (
    domain       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    default_role TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    verified_at  BIGINT,
    verified_by  TEXT
);
CREATE INDEX tenant_domains_tenant_id_idx ON tenant_domains (tenant_id);
