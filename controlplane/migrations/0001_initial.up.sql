-- Keel's desired and observed state. See DESIGN.md, "Data model".

CREATE TABLE host (
    name            text PRIMARY KEY,
    labels          jsonb       NOT NULL DEFAULT '{}',
    cpu_millis      bigint      NOT NULL DEFAULT 0,
    memory_mib      bigint      NOT NULL DEFAULT 0,
    schedulable     boolean     NOT NULL DEFAULT true,
    cordon_reason   text        NOT NULL DEFAULT '',
    cordon_actor    text        NOT NULL DEFAULT '',
    cordoned_at     timestamptz,
    state           text        NOT NULL DEFAULT 'UNKNOWN'
                    CHECK (state IN ('READY', 'NOT_READY', 'UNKNOWN')),
    state_since     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz,
    connected       boolean     NOT NULL DEFAULT false,
    agent_version   text        NOT NULL DEFAULT '',
    -- Bumped by every transaction that changes this host's instances, in that transaction:
    -- the row lock orders those transactions, so revisions become visible in commit order.
    revision        bigint      NOT NULL DEFAULT 0,
    registered_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workload (
    name             text PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('service', 'daemon')),
    replicas         integer     NOT NULL CHECK (replicas >= 0),
    max_unavailable  integer     NOT NULL CHECK (max_unavailable >= 0),
    max_surge        integer     NOT NULL CHECK (max_surge >= 0),
    selector         jsonb       NOT NULL DEFAULT '{}',
    deadline_ms      bigint      NOT NULL,
    spec             jsonb       NOT NULL,
    generation       bigint      NOT NULL DEFAULT 1,
    deleting         boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instance (
    id                  text PRIMARY KEY,
    workload            text        NOT NULL REFERENCES workload (name),
    generation          bigint      NOT NULL,
    host                text        NOT NULL REFERENCES host (name),
    spec                jsonb       NOT NULL,  -- the spec of its generation, immutable
    cpu_millis          bigint      NOT NULL,
    memory_mib          bigint      NOT NULL,
    desired             text        NOT NULL CHECK (desired IN ('RUNNING', 'STOPPED', 'REMOVED')),
    desired_changed_at  timestamptz NOT NULL DEFAULT now(),
    revision            bigint      NOT NULL,  -- host revision of its last desired change
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- observed, as the agent last reported it
    phase               text        NOT NULL DEFAULT 'PENDING',
    pid                 integer     NOT NULL DEFAULT 0,
    restart_count       integer     NOT NULL DEFAULT 0,
    last_exit           text        NOT NULL DEFAULT '',
    reason              text        NOT NULL DEFAULT '',
    message             text        NOT NULL DEFAULT '',
    ports               jsonb       NOT NULL DEFAULT '{}',
    ready               boolean     NOT NULL DEFAULT false,
    started_at          timestamptz,
    observed_at         timestamptz,
    converged_at        timestamptz
);

CREATE INDEX instance_host_revision ON instance (host, revision);
CREATE INDEX instance_workload ON instance (workload);

CREATE TABLE event (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    object    text        NOT NULL,  -- e.g. workload/web, host/host-1, instance/web-1-ab12
    kind      text        NOT NULL,  -- e.g. WorkloadApplied, HostReady
    actor     text        NOT NULL DEFAULT '',
    message   text        NOT NULL DEFAULT ''
);

CREATE INDEX event_object ON event (object, id);

-- Leadership: the replica holding the advisory lock bumps the epoch; controller
-- transactions check it so a deposed leader cannot write.
CREATE TABLE leader (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch       bigint      NOT NULL DEFAULT 0,
    holder      text        NOT NULL DEFAULT '',
    acquired_at timestamptz
);
INSERT INTO leader (id) VALUES (true);
