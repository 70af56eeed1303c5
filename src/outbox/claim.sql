WITH claimable AS MATERIALIZED (
                 SELECT o.id FROM outbox o
                 WHERE o.published_at IS NULL AND o.parked_at IS NULL
                   AND o.next_attempt_at <= now()
                   AND (o.claimed_until IS NULL OR o.claimed_until <= now())
                   AND o.id = (
                       SELECT min(e.id) FROM outbox e
                       WHERE e.aggregate_id = o.aggregate_id
                         AND e.published_at IS NULL AND e.parked_at IS NULL)
                 ORDER BY o.next_attempt_at, o.id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o
             SET claimed_until = now() + $2 * interval '1 millisecond', attempts = o.attempts + 1
             FROM claimable WHERE o.id = claimable.id
             RETURNING o.id, o.event_type, o.aggregate_id, o.payload, o.schema_version, o.attributes, o.data, o.trace_context