-- Every committed change to what an app serves bumps its revision; replicas poll revisions to
-- learn about changes made through other replicas.
ALTER TABLE apps ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
