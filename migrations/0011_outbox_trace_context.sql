-- The W3C `traceparent` of the request (or sync) that wrote the event, when traces
-- are exported: the relay publishes the event in that trace, and sends it as the
-- message's `traceparent` attribute. NULL when no trace was recorded.
ALTER TABLE outbox ADD COLUMN trace_context text;
