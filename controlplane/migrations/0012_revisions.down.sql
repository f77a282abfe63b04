ALTER TABLE workload
    DROP COLUMN canary_pending,
    DROP COLUMN spec_generations,
    DROP COLUMN paused_at,
    DROP COLUMN paused_by,
    DROP COLUMN paused,
    DROP COLUMN rollout;
DROP TABLE workload_revision;
