-- The deploy freeze: while any row here holds (no `until`, or `until` still ahead), applies
-- that change a workload's spec are refused (controlplane/freeze.py). One row per reason to
-- be frozen: the operator's (`keelctl freeze`), and one per firing alert that the
-- Alertmanager webhook received with `keel_action=freeze`, keyed by the alert's fingerprint
-- so that its resolve lifts exactly the row its firing set.
CREATE TABLE deploy_freeze (
    -- 'operator', or 'alert:<alertname>'.
    source       text        NOT NULL,
    -- The alert's fingerprint (Alertmanager's hash of its labels); '' for the operator.
    fingerprint  text        NOT NULL DEFAULT '',
    reason       text        NOT NULL DEFAULT '',
    actor        text        NOT NULL DEFAULT '',
    since        timestamptz NOT NULL DEFAULT now(),
    -- When the freeze lifts by itself; NULL: when it is lifted (unfreeze, or the resolve).
    until        timestamptz,
    PRIMARY KEY (source, fingerprint)
);

-- The webhook's token: a role that may call no RPC (controlplane/auth.py lists none for it),
-- only POST /hooks/alertmanager on the metrics port.
ALTER TABLE token DROP CONSTRAINT token_role_check;
ALTER TABLE token ADD CONSTRAINT token_role_check
    CHECK (role IN ('viewer', 'operator', 'admin', 'join', 'host', 'webhook'));
