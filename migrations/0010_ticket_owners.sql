-- Tickets belong to a passenger (the subject of the token that booked them, or
-- the passenger an agent named). Tickets booked before authentication existed
-- have no owner: only agents and admins see them.
ALTER TABLE tickets
    ADD COLUMN owner text CHECK (owner IS NULL OR length(owner) BETWEEN 1 AND 255),
    -- Who made the booking request (token subject; '' when authentication is
    -- off): idempotency keys are scoped to it, so one caller's key can neither
    -- collide with nor replay another's ticket.
    ADD COLUMN booked_by text NOT NULL DEFAULT '';

ALTER TABLE tickets DROP CONSTRAINT tickets_idempotency_key_key;
CREATE UNIQUE INDEX tickets_idempotency_scope ON tickets (booked_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A passenger's tickets in keyset order (ListBookings as a passenger), and the
-- count of their active tickets at booking time.
CREATE INDEX tickets_owner_keyset ON tickets (owner, created_at, id) WHERE owner IS NOT NULL;
