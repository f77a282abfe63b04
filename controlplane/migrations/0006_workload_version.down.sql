ALTER TABLE workload DROP COLUMN desired_version;
ALTER TABLE workload DROP COLUMN version;
DROP SEQUENCE workload_version;
