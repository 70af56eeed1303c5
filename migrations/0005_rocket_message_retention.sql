-- Retention deletes rocket messages by age (src/rockets/retention.rs). received_at
-- grows with insertion order, so a BRIN index finds the old ones for a few pages
-- of index and costs the writer's hot path next to nothing (a B-tree would add one
-- index insertion per message).
CREATE INDEX rocket_messages_received_at ON rocket_messages USING brin (received_at);
