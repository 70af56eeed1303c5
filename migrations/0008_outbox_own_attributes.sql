-- Events of another contract than spacet.v1 (the Go service's BookingsCancelled,
-- `schema_version = 'legacy'`): when set, `attributes` (a JSON object of strings)
-- replaces the standard attributes (the relay still adds `event_id`), and `data` is
-- the message data byte for byte: the Go shape fixes the key order, which `jsonb`
-- does not keep. `payload` holds the same JSON for operators and queries.
ALTER TABLE outbox ADD COLUMN attributes jsonb, ADD COLUMN data bytea;
