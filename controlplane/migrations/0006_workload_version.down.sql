ALTER TABLE workload DROP COLUMN version;
DROP SEQUENCE workload_version;
