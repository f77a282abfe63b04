-- When the workload's desired state last changed: the operator's write for an apply that
-- changes what runs or how many (spec, replicas, selector) and for a delete; the fencing
-- decision for the workloads whose instances it replaces. Instances and tombstones the plans
-- write carry it, so the convergence SLI's clock starts when the change became desired, and
-- time spent waiting in the control plane's queue counts.
ALTER TABLE workload ADD COLUMN desired_changed_at timestamptz NOT NULL DEFAULT now();
UPDATE workload SET desired_changed_at = updated_at;
