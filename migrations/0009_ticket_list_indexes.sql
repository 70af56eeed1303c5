-- ListBookings at a million tickets (issue 21). Each list walks (created_at, id)
-- in order; these indexes give the filters that select few tickets that order
-- within their matches, so a page reads its own rows and not the ones between:
--  * one launch day (and one launchpad on one day): an ordered index scan; a
--    short day range is read day by day and merged (booking::list);
--  * cancelled tickets: a partial index, as small as the cancellations.
-- The name filters have their trigram indexes (0007); destination, a confirmed
-- status and a launchpad alone match a large share of the tickets, which the
-- keyset walk finds within a few rows.
--
-- Plain CREATE INDEX (migrations run in a transaction, which CONCURRENTLY cannot):
-- on an existing table it blocks writes to tickets while it builds (about 4 s for
-- 1,000,000 tickets here; reads go on). On a large table, create them first with
-- CREATE INDEX CONCURRENTLY under the same names; IF NOT EXISTS then skips them.
CREATE INDEX IF NOT EXISTS tickets_day_keyset ON tickets (launch_day, created_at, id);
CREATE INDEX IF NOT EXISTS tickets_pad_day_keyset ON tickets (launchpad_id, launch_day, created_at, id);
CREATE INDEX IF NOT EXISTS tickets_cancelled_keyset ON tickets (created_at, id) WHERE status = 'CANCELLED';
