-- Bundle patches (docs/patches.md): bsdiff patches of an update's launch asset from the launch
-- assets of earlier updates and from store builds' embedded bundles, computed in the background
-- after a publish and served to devices that ask with `A-IM: bsdiff`.

-- 1: devices are sent patches when they ask (the default); 0: always the full bundle.
ALTER TABLE apps ADD COLUMN patches INTEGER NOT NULL DEFAULT 1;

-- A store build's embedded bundle, registered with `aloft embedded add`: a base for patches to
-- the first updates devices on that build take.
CREATE TABLE embedded_bundles (
    app_id          INTEGER NOT NULL REFERENCES apps(id),
    id              TEXT    NOT NULL,  -- the embedded update id (app.manifest's `id`)
    platform        TEXT    NOT NULL,
    runtime_version TEXT    NOT NULL,
    blob_hash       TEXT    NOT NULL REFERENCES blobs(hash),
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, id)
);
CREATE INDEX embedded_bundles_by_runtime ON embedded_bundles (app_id, platform, runtime_version);

-- One patch from a base (an update or an embedded update) to an update's launch asset. Pending
-- rows are the work queue: claimed under a lease, so replicas never compute one twice at once
-- and a restart (or another replica) takes over what a crash left.
CREATE TABLE patches (
    target_id   TEXT    NOT NULL,  -- the update whose launch asset the patch rebuilds
    base_id     TEXT    NOT NULL,  -- the update or embedded update whose bundle it applies to
    base_kind   TEXT    NOT NULL,  -- 'update' or 'embedded'
    app_id      INTEGER NOT NULL REFERENCES apps(id),
    platform    TEXT    NOT NULL,
    base_hash   TEXT    NOT NULL,  -- the base bundle's blob
    target_hash TEXT    NOT NULL,  -- the target bundle's blob
    state       TEXT    NOT NULL,  -- 'pending', 'done', 'not_worth_it' or 'failed'
    patch_hash  TEXT    REFERENCES blobs(hash),  -- the patch's blob, once done
    size        INTEGER,           -- the patch's size, once computed
    full_size   INTEGER,           -- the target's brotli size when the patch was weighed
    hits        INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,  -- when a pending patch is (next) computed
    lease_until INTEGER,           -- a worker holds it until then; another may take it after
    error       TEXT,              -- why the last attempt failed
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (target_id, base_id)
);
CREATE INDEX patches_due ON patches (state, next_at);
CREATE INDEX patches_by_hashes ON patches (base_hash, target_hash);
