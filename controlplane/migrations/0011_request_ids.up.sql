-- Request ids: the record of a mutating call that committed, written in the same transaction as
-- its write (controlplane/idempotency.py), so a retry of it with the same id (gRPC metadata
-- `keel-request-id`) gets the first answer instead of applying it twice. A crash between the
-- write and its record cannot happen: they commit together or not at all.
CREATE TABLE request (
    id         text        PRIMARY KEY,  -- the caller's request id
    method     text        NOT NULL,     -- the RPC it named, e.g. ApplyWorkload
    digest     bytea       NOT NULL,     -- sha256 of the request message (deterministic bytes)
    response   bytea       NOT NULL,     -- the serialized answer the first attempt gave
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Pruning (--request-retention) deletes the oldest first, a bounded batch at a time.
CREATE INDEX request_created ON request (created_at);
