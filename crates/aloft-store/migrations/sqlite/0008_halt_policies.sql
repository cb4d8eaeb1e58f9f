-- Self-halting rollouts: when a rolled-out update fails on too many devices, the rollout stops
-- itself. A setting is 'off' or a JSON policy ({"failure_rate": percent, "min_devices": n}, see
-- aloft_core::halt); NULL means "as the app says" (for a rollout) or "the built-in default"
-- (for an app).
ALTER TABLE apps ADD COLUMN halt_policy TEXT;
ALTER TABLE update_groups ADD COLUMN halt_policy TEXT;
ALTER TABLE channels ADD COLUMN rollout_halt_policy TEXT;
