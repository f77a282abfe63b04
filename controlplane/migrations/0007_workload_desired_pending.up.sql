-- Whether the workload's last desired change is still waiting for a plan that carries it out
-- in full. While it waits, a further change keeps `desired_changed_at` where it is: an apply
-- and a second apply before the controller placed the first must not restart the convergence
-- clock of instances that were already wanted since the first (the SLI would hide that wait).
-- Set by the writes that stamp `desired_changed_at`; cleared by a plan that leaves nothing
-- more to do this pass (`instance_store.apply_plan`, `settle_desired`).
ALTER TABLE workload ADD COLUMN desired_pending boolean NOT NULL DEFAULT false;
