ALTER TABLE workload DROP COLUMN desired_changed_at;
