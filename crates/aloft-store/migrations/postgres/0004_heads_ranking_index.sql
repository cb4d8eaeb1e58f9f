-- Loading what an app serves ranks every update of its branches per (branch, platform, runtime
-- version). This index carries every column the ranking reads, so it never touches the table
-- rows, whose manifest bodies make them large.
CREATE INDEX updates_ranking ON updates
    (branch_id, platform, runtime_version, created_at DESC, id, withdrawn_at, group_id);
-- The ranking above makes updates_by_head redundant.
DROP INDEX updates_by_head;
-- A publish reads the app's newest createdAt to keep them strictly increasing.
CREATE INDEX update_groups_by_app ON update_groups (app_id, created_at DESC);
-- The ranking leaves out disabled groups: few, found here without reading every group.
CREATE INDEX update_groups_disabled ON update_groups (app_id) WHERE disabled_at IS NOT NULL;
