-- Outbox relay support.

-- The contract version each event was written with: a relay of a newer release must
-- not relabel events an older release wrote.
ALTER TABLE outbox ADD COLUMN schema_version text NOT NULL DEFAULT '1';

-- Per-ticket ordering: the relay claims an event only when no earlier event of the
-- same ticket is still waiting (in backoff or leased by another relay).
CREATE INDEX outbox_pending_by_ticket ON outbox (aggregate_id, id)
    WHERE published_at IS NULL AND parked_at IS NULL;

-- Parked events, for the liveness check and for operators.
CREATE INDEX outbox_parked ON outbox (parked_at)
    WHERE parked_at IS NOT NULL AND published_at IS NULL;
