-- Release management: rollouts, republishes, disabled groups, rollback directives, channel
-- branch splits, scoped tokens and the audit log.

-- 'update' groups carry manifests; 'rollback' groups carry rollBackToEmbedded directives.
ALTER TABLE update_groups ADD COLUMN kind TEXT NOT NULL DEFAULT 'update';
-- While a rollout is active: the percentage of devices (0-100) that get this group, and the
-- salt their EAS-Client-ID is hashed with. NULL once complete (or never a rollout).
ALTER TABLE update_groups ADD COLUMN rollout_percentage INTEGER;
ALTER TABLE update_groups ADD COLUMN rollout_salt TEXT;
-- The group this one is a republish of.
ALTER TABLE update_groups ADD COLUMN republished_from TEXT;
-- Set when the group stops being served: 'disabled', 'rollout_reverted'.
ALTER TABLE update_groups ADD COLUMN disabled_at INTEGER;
ALTER TABLE update_groups ADD COLUMN disabled_reason TEXT;
CREATE INDEX update_groups_by_branch ON update_groups (branch_id, created_at DESC);

-- 'manifest' or 'directive' (the body is then a directive, signed the same way).
ALTER TABLE updates ADD COLUMN kind TEXT NOT NULL DEFAULT 'manifest';
-- The update whose content this one republishes (the original, never a republish).
ALTER TABLE updates ADD COLUMN republished_from TEXT;
-- Set when this one update stops being served (rolled back, or superseded by a revert).
ALTER TABLE updates ADD COLUMN withdrawn_at INTEGER;
ALTER TABLE updates ADD COLUMN withdrawn_reason TEXT;

-- A channel may split its devices between its branch and a second one.
ALTER TABLE channels ADD COLUMN rollout_branch_id INTEGER REFERENCES branches(id);
ALTER TABLE channels ADD COLUMN rollout_percentage INTEGER;
ALTER TABLE channels ADD COLUMN rollout_salt TEXT;

-- Scopes: 'admin' (everything), 'publish' or 'read' for the apps listed (comma-separated slugs).
ALTER TABLE tokens ADD COLUMN apps TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,  -- token name (and id)
    app     TEXT,              -- app slug, when the change concerns one
    action  TEXT    NOT NULL,  -- e.g. 'publish', 'channel.edit', 'rollout.set'
    target  TEXT    NOT NULL DEFAULT '',
    details TEXT    NOT NULL DEFAULT '{}', -- JSON
    remote  TEXT    NOT NULL DEFAULT ''    -- client address (and X-Forwarded-For)
);
CREATE INDEX audit_log_by_app ON audit_log (app, at);
