-- Rollouts as first-class objects: every spec change of a workload is a numbered revision,
-- kept with its spec, who applied it, when and why; a workload's rollout policy and pause.

CREATE TABLE workload_revision (
    workload      text        NOT NULL REFERENCES workload (name) ON DELETE CASCADE,
    -- The workload generation it was applied as: its instances carry that generation.
    revision      bigint      NOT NULL,
    spec          jsonb       NOT NULL,  -- as stored on the workload: secrets sealed
    actor         text        NOT NULL DEFAULT '',
    reason        text        NOT NULL DEFAULT '',  -- the change cause
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The earliest revision with the same spec: this one is a rollback to it (NULL if none).
    same_as       bigint,
    state         text        NOT NULL DEFAULT 'PROGRESSING'
                  CHECK (state IN ('PROGRESSING', 'AWAITING_PROMOTION', 'COMPLETE', 'FAILED',
                                   'ROLLED_BACK', 'ABORTED', 'SUPERSEDED')),
    state_since   timestamptz NOT NULL DEFAULT now(),
    -- When it was first fully ready: a revision to return to.
    completed_at  timestamptz,
    promoted_at   timestamptz,
    promoted_by   text        NOT NULL DEFAULT '',
    -- Why it failed, explained like a stuck state (reason, message, evidence, runbook, next).
    failure       jsonb,
    PRIMARY KEY (workload, revision)
);

ALTER TABLE workload
    -- The rollout policy (`rollout:`), changed in place like the budgets.
    ADD COLUMN rollout            jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN paused             boolean     NOT NULL DEFAULT false,
    ADD COLUMN paused_by          text        NOT NULL DEFAULT '',
    ADD COLUMN paused_at          timestamptz,
    -- The generations whose spec is the current one: their instances are current (a
    -- rollback to an earlier spec keeps the instances that already run it).
    ADD COLUMN spec_generations   bigint[]    NOT NULL DEFAULT '{}',
    -- The current revision still waits for its canaries to be promoted.
    ADD COLUMN canary_pending     boolean     NOT NULL DEFAULT false;

-- Every workload there is now starts its history at its current generation.
INSERT INTO workload_revision (workload, revision, spec, created_at, state, state_since)
SELECT name, generation, spec, updated_at, 'PROGRESSING', updated_at FROM workload;
UPDATE workload SET spec_generations = ARRAY[generation];
