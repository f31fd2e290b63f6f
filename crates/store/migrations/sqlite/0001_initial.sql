-- tailwarden schema, SQLite flavour. Keep in step with ../postgres/0001_initial.sql: same tables, columns,
-- constraint columns and semantics; only the type spellings differ.
-- Timestamps: unix milliseconds UTC (INTEGER). JSON: TEXT. Key hashes: BLOB.

CREATE TABLE tenants (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    created_ms     INTEGER NOT NULL,
    -- bumped by every node registration: the row lock it takes serialises address and name allocation
    -- per tenant across instances sharing one database
    registrations  INTEGER NOT NULL DEFAULT 0
);

INSERT INTO tenants (id, name, created_ms)
VALUES (1, 'default', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER));

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id            INTEGER NOT NULL REFERENCES tenants (id),
    name                 TEXT    NOT NULL,
    display_name         TEXT    NOT NULL DEFAULT '',
    email                TEXT    NOT NULL DEFAULT '',
    provider_identifier  TEXT,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, provider_identifier),
    -- target of the composite foreign keys below: a row can only point at a user of its own tenant
    UNIQUE (tenant_id, id)
);

CREATE TABLE pre_auth_keys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id),
    user_id        INTEGER,
    prefix         TEXT    NOT NULL UNIQUE,
    hash           BLOB    NOT NULL,
    reusable       BOOLEAN NOT NULL DEFAULT FALSE,
    ephemeral      BOOLEAN NOT NULL DEFAULT FALSE,
    used_count     INTEGER NOT NULL DEFAULT 0,
    tags           TEXT    NOT NULL DEFAULT '[]',
    expiration_ms  INTEGER,
    created_ms     INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX pre_auth_keys_user ON pre_auth_keys (tenant_id, user_id);

CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        INTEGER NOT NULL REFERENCES tenants (id),
    machine_key      TEXT    NOT NULL,
    node_key         TEXT    NOT NULL UNIQUE,
    disco_key        TEXT    NOT NULL DEFAULT '',
    ipv4             TEXT,
    ipv6             TEXT,
    hostname         TEXT    NOT NULL,
    given_name       TEXT    NOT NULL,
    user_id          INTEGER,
    tags             TEXT    NOT NULL DEFAULT '[]',
    hostinfo         TEXT    NOT NULL DEFAULT '{}',
    endpoints        TEXT    NOT NULL DEFAULT '[]',
    approved_routes  TEXT    NOT NULL DEFAULT '[]',
    expiry_ms        INTEGER,
    last_seen_ms     INTEGER,
    ephemeral        BOOLEAN NOT NULL DEFAULT FALSE,
    register_method  TEXT    NOT NULL CHECK (register_method IN ('authkey', 'cli', 'oidc')),
    auth_key_id      INTEGER REFERENCES pre_auth_keys (id) ON DELETE SET NULL,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    UNIQUE (tenant_id, machine_key),
    UNIQUE (tenant_id, given_name),
    UNIQUE (tenant_id, ipv4),
    UNIQUE (tenant_id, ipv6),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX nodes_user ON nodes (tenant_id, user_id);
CREATE INDEX nodes_auth_key ON nodes (auth_key_id);

CREATE TABLE api_keys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id),
    prefix         TEXT    NOT NULL UNIQUE,
    hash           BLOB    NOT NULL,
    expiration_ms  INTEGER,
    last_seen_ms   INTEGER,
    created_ms     INTEGER NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE policies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    data        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX policies_tenant ON policies (tenant_id, id);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
