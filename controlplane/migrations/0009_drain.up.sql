-- Cordon and drain: operations as durable records, and the two marks a drain leaves on the
-- fleet. See controlplane/drain.py (the planner) and controlplane/drainer.py (the controller).

-- A drain's replacement names the instance it replaces (make-before-break): the two count as
-- one replica until the old one is gone, and a drain resumed after a restart or a failover
-- finds its moves under way instead of starting them again.
ALTER TABLE instance ADD COLUMN replaces text NOT NULL DEFAULT '';

-- A drain moved this host's services off and stopped its daemons: they stay stopped until the
-- host is uncordoned (a plain cordon keeps daemons running).
ALTER TABLE host ADD COLUMN drained boolean NOT NULL DEFAULT false;

CREATE SEQUENCE operation_number AS bigint MINVALUE 1;

CREATE TABLE operation (
    id            text        PRIMARY KEY,  -- op-NNNN, from operation_number
    kind          text        NOT NULL CHECK (kind IN ('drain')),
    state         text        NOT NULL
                  CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    hosts         text[]      NOT NULL,
    -- deadline_ms, on_deadline (fail | force), max_parallel (0: no limit), ignore_daemons
    params        jsonb       NOT NULL,
    actor         text        NOT NULL DEFAULT '',
    reason        text        NOT NULL DEFAULT '',
    runbook       text        NOT NULL,
    -- moved, remaining, blocked, in_flight, queued, eta_s, blockers (each with its since)
    progress      jsonb       NOT NULL DEFAULT '{}',
    message       text        NOT NULL DEFAULT '',  -- the result, as a person reads it
    forced        boolean     NOT NULL DEFAULT false,  -- the deadline passed and force stopped
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    deadline_at   timestamptz NOT NULL,
    -- since when the drain has had a blocker without a move finishing (NULL: not blocked)
    blocked_since timestamptz,
    -- taken anew by every write to the record: a watcher sends each version once
    version       bigint      NOT NULL DEFAULT 1
);

-- The few operations the drain controller looks after, and `keelctl ops`.
CREATE INDEX operation_active ON operation (created_at) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX operation_created ON operation (created_at);
