-- The operator's instance list (ListInstances) is paged: (workload, generation, id) order, each
-- page read on after the last key the previous one held (controlplane/paging.py). This index
-- serves that order for the whole fleet and for one workload alike, so a page costs the same
-- wherever it is in the list. Its first column serves every read by workload, so it replaces
-- instance_workload. The columns never change after an insert: updates stay HOT as before.
CREATE INDEX instance_workload_generation_id ON instance (workload, generation, id);
DROP INDEX instance_workload;
-- The operator's list of stuck objects (ListStuck) reads only the instances marked stuck.
CREATE INDEX instance_stuck ON instance (id) WHERE stuck_reason <> '';
