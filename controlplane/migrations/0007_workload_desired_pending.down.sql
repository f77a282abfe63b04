ALTER TABLE workload DROP COLUMN desired_pending;
