-- The first answer to a write that carried an `Idempotency-Key`, replayed to retries with the
-- same key. A row is inserted (status NULL) before the write runs, so two requests with one key,
-- on any replica, cannot both act; it is completed with the answer, or deleted when the answer
-- was transient (5xx) so that a retry acts. Rows expire after a day.
CREATE TABLE idempotency_keys (
    token_id        BIGINT NOT NULL,  -- the caller's token: keys of different tokens never meet
    idempotency_key TEXT   NOT NULL,
    fingerprint     TEXT   NOT NULL,  -- hex SHA-256 of method, path, query and the body's SHA-256
    created_at      BIGINT NOT NULL,  -- when the request was claimed (or taken over)
    status          BIGINT,           -- NULL while the first request runs
    content_type    TEXT,
    body            BYTEA,
    PRIMARY KEY (token_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
