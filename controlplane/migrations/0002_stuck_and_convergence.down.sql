DROP INDEX instance_unconverged;

ALTER TABLE workload
    DROP COLUMN trace_context,
    DROP COLUMN unconverged_since,
    DROP COLUMN stuck_message,
    DROP COLUMN stuck_since,
    DROP COLUMN stuck_reason;

ALTER TABLE instance
    DROP COLUMN trace_context,
    DROP COLUMN slow_counted,
    DROP COLUMN unconverged_since,
    DROP COLUMN agent_stuck,
    DROP COLUMN stuck_message,
    DROP COLUMN stuck_since,
    DROP COLUMN stuck_reason;
