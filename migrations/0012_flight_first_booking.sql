-- The earliest creation time of each flight's tickets, or a time before it: a
-- lower bound of `tickets.created_at` over any set of flights. A ticket list whose
-- launch day range is too long to read day by day starts its keyset walk at the
-- least bound of the range's flights, instead of at the table's first ticket.
--
-- Kept by the booking that takes a seat (`least(first_booked_at,
-- clock_timestamp())`, before the ticket is inserted, whose `created_at` is a
-- later `clock_timestamp()`). NULL means unknown (a flight written by hand, as
-- benchmarks seed them): `least` would replace it, so it is kept NULL, and a range
-- with such a flight is walked from the start.
ALTER TABLE flights ADD COLUMN first_booked_at timestamptz;

UPDATE flights f SET first_booked_at = t.first
FROM (SELECT flight_id, min(created_at) AS first FROM tickets GROUP BY flight_id) t
WHERE t.flight_id = f.id;

-- Both bounds read the flights of a pad (or of all pads) in a day range.
CREATE INDEX flights_pad_day_first_booked ON flights (launchpad_id, launch_day) INCLUDE (first_booked_at);
CREATE INDEX flights_day_first_booked ON flights (launch_day) INCLUDE (first_booked_at);
