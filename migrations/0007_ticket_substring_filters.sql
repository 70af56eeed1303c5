-- The Go service's ListBookings filters match names as case-insensitive
-- substrings: trigram indexes find them without reading every ticket. They
-- replace the prefix (text_pattern_ops) indexes, which a substring cannot use.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

DROP INDEX IF EXISTS tickets_first_name;
DROP INDEX IF EXISTS tickets_last_name;
CREATE INDEX tickets_first_name_trgm ON tickets USING gin (lower(first_name) gin_trgm_ops);
CREATE INDEX tickets_last_name_trgm ON tickets USING gin (lower(last_name) gin_trgm_ops);
