-- Aloft schema, version 1. Timestamps are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE apps (
    id              INTEGER PRIMARY KEY,
    slug            TEXT    NOT NULL UNIQUE,
    default_channel TEXT    NOT NULL DEFAULT 'production',
    -- Server-side signing key (PEM) and its key id, when the app signs on the server.
    signing_key_pem TEXT,
    signing_keyid   TEXT,
    created_at      INTEGER NOT NULL
);

CREATE TABLE branches (
    id         INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps(id),
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps(id),
    name       TEXT    NOT NULL,
    branch_id  INTEGER NOT NULL REFERENCES branches(id),
    created_at INTEGER NOT NULL,
    UNIQUE (app_id, name)
);

-- A verified, stored file. A row exists only once its bytes are in blob storage.
CREATE TABLE blobs (
    hash       TEXT    PRIMARY KEY,  -- unpadded base64url SHA-256
    md5        TEXT    NOT NULL,     -- lower-case hex MD5
    size       INTEGER NOT NULL,
    br_size    INTEGER,              -- size of the brotli variant, when one is stored
    gz_size    INTEGER,              -- size of the gzip variant, when one is stored
    compressed INTEGER NOT NULL DEFAULT 0, -- 1 once variants were made (or judged useless)
    created_at INTEGER NOT NULL
);

CREATE TABLE update_groups (
    id           TEXT    PRIMARY KEY,
    app_id       INTEGER NOT NULL REFERENCES apps(id),
    branch_id    INTEGER NOT NULL REFERENCES branches(id),
    message      TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    published_by TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE updates (
    id              TEXT    PRIMARY KEY,
    group_id        TEXT    NOT NULL REFERENCES update_groups(id),
    branch_id       INTEGER NOT NULL REFERENCES branches(id),
    platform        TEXT    NOT NULL,
    runtime_version TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    -- The exact manifest bytes served (and signed).
    manifest        BLOB    NOT NULL,
    signature       TEXT,
    keyid           TEXT
);
CREATE INDEX updates_by_head ON updates (branch_id, platform, runtime_version, created_at DESC);
CREATE INDEX updates_by_group ON updates (group_id);

CREATE TABLE update_assets (
    update_id TEXT NOT NULL REFERENCES updates(id),
    blob_hash TEXT NOT NULL REFERENCES blobs(hash),
    PRIMARY KEY (update_id, blob_hash)
);
CREATE INDEX update_assets_by_blob ON update_assets (blob_hash);

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the secret; the secret is never stored
    scope      TEXT    NOT NULL DEFAULT 'admin',
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
