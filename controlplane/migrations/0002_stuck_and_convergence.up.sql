-- Stuck states, convergence tracking and trace context (the SLI issue).

ALTER TABLE instance
    ADD COLUMN stuck_reason   text        NOT NULL DEFAULT '',
    ADD COLUMN stuck_since    timestamptz,
    ADD COLUMN stuck_message  text        NOT NULL DEFAULT '',
    -- the agent's own verdict that the instance is stuck (CRASH_LOOP, START_FAILED, ...)
    ADD COLUMN agent_stuck    boolean     NOT NULL DEFAULT false,
    -- when it last stopped matching its desired state (NULL while converged)
    ADD COLUMN unconverged_since timestamptz,
    -- counted once in keel_changes_slow_total when its change passed the slow threshold
    ADD COLUMN slow_counted   boolean     NOT NULL DEFAULT false,
    -- W3C traceparent of the operator request behind its latest desired change
    ADD COLUMN trace_context  text        NOT NULL DEFAULT '';

ALTER TABLE workload
    ADD COLUMN stuck_reason      text        NOT NULL DEFAULT '',
    ADD COLUMN stuck_since       timestamptz,
    ADD COLUMN stuck_message     text        NOT NULL DEFAULT '',
    ADD COLUMN unconverged_since timestamptz,
    ADD COLUMN trace_context     text        NOT NULL DEFAULT '';

CREATE INDEX instance_unconverged ON instance (desired_changed_at) WHERE converged_at IS NULL;
