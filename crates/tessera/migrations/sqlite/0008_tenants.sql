-- Tenants: a user's personal workspace, teams and enterprises. A user belongs to several, with
-- roles in each; one tenant is active per token (`tid`).

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    -- lower-case letters, digits and '-', unique among all tenants (deleted ones included until purged)
    slug          TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('personal', 'team', 'enterprise')),
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    -- the owner of a personal tenant (one per user); NULL for teams and enterprises
    personal_of   TEXT UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    -- JSON object of tenant settings
    settings      TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    -- soft deletion: `tessera tenants purge` removes the row later
    deleted_at    BIGINT
);

CREATE TABLE memberships (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_id_idx ON memberships (user_id);

-- A member's roles: built-in (owner, admin, member, viewer) or custom roles of the tenant.
CREATE TABLE member_roles (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE
);

-- Custom roles: a name and a set of permissions (built-in or registered by the application).
CREATE TABLE tenant_roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE tenant_role_permissions (
    tenant_id  TEXT NOT NULL,
    role       TEXT NOT NULL,
    permission TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role, permission),
    FOREIGN KEY (tenant_id, role) REFERENCES tenant_roles (tenant_id, name) ON DELETE CASCADE
);

-- Application-defined permissions of a tenant (`invoices:approve`).
CREATE TABLE tenant_permissions (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Invitations: a single-use, expiring link mailed to an address; only the token's SHA-256 is kept.
CREATE TABLE invitations (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    -- space-separated role names
    roles            TEXT NOT NULL,
    token_hash       TEXT NOT NULL UNIQUE,
    invited_by       TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    accepted_at      BIGINT,
    accepted_by      TEXT,
    revoked_at       BIGINT
);
CREATE INDEX invitations_tenant_id_idx ON invitations (tenant_id);

-- The tenant a user signed in to last: the default of the next login.
ALTER TABLE users ADD COLUMN last_tenant_id TEXT;

-- Audit entries name the tenant they happened in.
ALTER TABLE audit_log ADD COLUMN tenant_id TEXT;
CREATE INDEX audit_log_tenant_id_idx ON audit_log (tenant_id, id);

-- Every existing user gets a personal tenant (id and slug from the user id), as owner.
INSERT INTO tenants (id, slug, name, type, status, personal_of, settings, created_at, updated_at)
    SELECT id, 'p-' || replace(id, '-', ''), 'Personal', 'personal', 'active', id, '{}', created_at, created_at
    FROM users;
INSERT INTO memberships (tenant_id, user_id, created_at) SELECT id, id, created_at FROM users;
INSERT INTO member_roles (tenant_id, user_id, role) SELECT id, id, 'owner' FROM users;
