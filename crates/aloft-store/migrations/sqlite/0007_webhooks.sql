-- Webhooks: per app, a URL that is sent the app's changes as they commit. The audit log is the
-- outbox (an entry exists exactly when its change committed): the delivery job turns each new
-- entry of a subscribed event into one delivery row per webhook, and sends due rows.
CREATE TABLE webhooks (
    id           INTEGER PRIMARY KEY,
    app_id       INTEGER NOT NULL REFERENCES apps(id),
    url          TEXT    NOT NULL,
    events       TEXT    NOT NULL,  -- comma-separated: publish,rollout,halt,rollback,disable
    secret       TEXT    NOT NULL,  -- the HMAC key the payloads are signed with (needed to sign)
    created_at   INTEGER NOT NULL,
    -- The newest audit entry already turned into deliveries (or older than the webhook).
    audit_cursor INTEGER NOT NULL
);
CREATE INDEX webhooks_by_app ON webhooks (app_id);
-- The delivery job reads each app's audit entries after a webhook's cursor, every second.
CREATE INDEX audit_log_by_app_id ON audit_log (app, id);

-- One event for one webhook. The body is fixed when the row is made, so every attempt sends
-- (and signs) the same bytes. UNIQUE (webhook_id, audit_id): replicas that turn the same entry
-- into deliveries at once make one row.
CREATE TABLE webhook_deliveries (
    id          TEXT    NOT NULL PRIMARY KEY,  -- a UUID, sent as `aloft-delivery`
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    audit_id    INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,  -- when the event happened (the audit entry's time)
    state       TEXT    NOT NULL,  -- 'pending', 'delivered' or 'failed'
    attempts    INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,  -- when a pending delivery is next tried
    lease_until INTEGER,           -- a sender holds it until then; another may take it after
    UNIQUE (webhook_id, audit_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);

-- Every attempt at a delivery: the receiver's status code, or why there was none.
CREATE TABLE webhook_attempts (
    delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries(id),
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,           -- the HTTP status, NULL when none came back
    error       TEXT,              -- why it failed, when it did
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
