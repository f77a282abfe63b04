-- A workload's version: taken anew from `workload_version` by every write that changes the
-- workload's desired state or its instances, desired or observed (an apply, a delete, a plan,
-- fencing, a report batch that changes what the leader's cache holds of an instance). The
-- leader's cache keeps each workload with the version it read (controlplane/cache.py), and a
-- plan is written only while that is still the workload's version, so a plan made from a stale
-- read is refused. A sequence rather than a per-row counter: a workload deleted and applied
-- again never repeats a version of its predecessor, so a version read earlier never passes for
-- a newer one.
CREATE SEQUENCE workload_version AS bigint MINVALUE 1;
ALTER TABLE workload ADD COLUMN version bigint NOT NULL DEFAULT nextval('workload_version');
-- Taken anew (from the same sequence) only by the writes that change what should run: an apply,
-- a delete, a plan, fencing; not by reports. A plan that only creates instances depends on the
-- desired state alone (how many should run, where they are), so it is checked against this one
-- and agents' reports streaming in do not refuse it.
ALTER TABLE workload ADD COLUMN desired_version bigint NOT NULL
    DEFAULT nextval('workload_version');
