DROP INDEX instance_stuck;
CREATE INDEX instance_workload ON instance (workload);
DROP INDEX instance_workload_generation_id;
