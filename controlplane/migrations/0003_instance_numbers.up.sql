-- Instance ids are WORKLOAD-GENERATION-NUMBER with NUMBER from this sequence, in hex: unique
-- by construction. (A random suffix collided at scale, and one duplicate aborted the plan that
-- held it; a sequence value is never handed out twice, even by a transaction that rolls back.)
CREATE SEQUENCE instance_number AS bigint MINVALUE 1;

-- A database that already has instances starts past every hex suffix in use, so no new id can
-- equal an old one (ids with more than 15 hex digits were never made).
SELECT setval(
    'instance_number',
    coalesce(max(('x' || lpad(substring(id FROM '-([0-9a-f]{1,15})$'), 16, '0'))::bit(64)::bigint), 0)
        + 1,
    false)
FROM instance
WHERE id ~ '-[0-9]+-[0-9a-f]{1,15}$';
