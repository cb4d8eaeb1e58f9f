-- People who use the dashboard. A user's role is a token scope (admin; publish or read with the
-- apps it covers), so the dashboard and the API share one set of access rules.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,  -- lower case
    scope         TEXT    NOT NULL,         -- admin, publish or read (as tokens.scope)
    apps          TEXT    NOT NULL,         -- comma-separated slugs, for publish and read
    password_hash TEXT,                     -- argon2id, PHC string; NULL until set through a link
    created_at    INTEGER NOT NULL
);

-- One-time sign-in links (`aloft users create` / `reset`): only a SHA-256 of the secret is kept.
CREATE TABLE sign_in_links (
    link_hash  TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX sign_in_links_by_user ON sign_in_links (user_id);

-- Signed-in browsers, in the database so every replica knows them. The cookie holds the secret;
-- only its SHA-256 is kept. `csrf` is the token every form of the session carries.
CREATE TABLE sessions (
    session_hash TEXT    NOT NULL PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    csrf         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    remote       TEXT    NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
