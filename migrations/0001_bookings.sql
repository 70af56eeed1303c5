-- Launchpads, SpaceX launches, flights, tickets and the outbox.
-- The business rules live here as constraints, so they hold under any concurrency.

CREATE TABLE launchpads (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{24}$'),
    name        text NOT NULL,
    full_name   text NOT NULL,
    locality    text NOT NULL,
    region      text NOT NULL,
    timezone    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'inactive', 'unknown', 'retired', 'lost', 'under construction')),
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- The six SpaceX pads as of the frozen v4 data; the SpaceX sync keeps them fresh.
-- refreshed_at in the past so that the first sync refreshes them.
INSERT INTO launchpads (id, name, full_name, locality, region, timezone, status, refreshed_at) VALUES
 ('5e9e4501f5090910d4566f83', 'VAFB SLC 3W', 'Vandenberg Space Force Base Space Launch Complex 3W', 'Vandenberg Space Force Base', 'California', 'America/Los_Angeles', 'retired', '-infinity'),
 ('5e9e4501f509094ba4566f84', 'CCSFS SLC 40', 'Cape Canaveral Space Force Station Space Launch Complex 40', 'Cape Canaveral', 'Florida', 'America/New_York', 'active', '-infinity'),
 ('5e9e4502f5090927f8566f85', 'STLS', 'SpaceX South Texas Launch Site', 'Boca Chica Village', 'Texas', 'America/Chicago', 'under construction', '-infinity'),
 ('5e9e4502f5090995de566f86', 'Kwajalein Atoll', 'Kwajalein Atoll Omelek Island', 'Omelek Island', 'Marshall Islands', 'Pacific/Kwajalein', 'retired', '-infinity'),
 ('5e9e4502f509092b78566f87', 'VAFB SLC 4E', 'Vandenberg Space Force Base Space Launch Complex 4E', 'Vandenberg Space Force Base', 'California', 'America/Los_Angeles', 'active', '-infinity'),
 ('5e9e4502f509094188566f88', 'KSC LC 39A', 'Kennedy Space Center Historic Launch Complex 39A', 'Cape Canaveral', 'Florida', 'America/New_York', 'active', '-infinity');

-- SpaceX launches as last synced. blocked_day is the pad-local day the launch
-- blocks (NULL while the precision is coarser than a day).
CREATE TABLE spacex_launches (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    launchpad_id   text NOT NULL,
    date_utc       timestamptz NOT NULL,
    date_precision text NOT NULL CHECK (date_precision IN ('hour', 'day', 'month', 'quarter', 'half', 'year')),
    upcoming       boolean NOT NULL,
    blocked_day    date,
    synced_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spacex_launches_pad_day ON spacex_launches (launchpad_id, blocked_day) WHERE upcoming;
CREATE INDEX spacex_launches_pad_date ON spacex_launches (launchpad_id, date_utc);

CREATE TABLE sync_state (
    resource        text PRIMARY KEY,
    last_success_at timestamptz,
    last_attempt_at timestamptz,
    last_error      text
);

-- A flight: one launchpad, one pad-local day, one destination.
CREATE TABLE flights (
    id            uuid PRIMARY KEY,
    launchpad_id  text NOT NULL REFERENCES launchpads (id),
    launch_day    date NOT NULL,
    -- Monday of the ISO week (2000-01-03 was a Monday); immutable arithmetic so
    -- that it can be indexed.
    week_start    date NOT NULL GENERATED ALWAYS AS
                    (launch_day - ((((launch_day - DATE '2000-01-03') % 7) + 7) % 7)) STORED,
    destination   text NOT NULL CHECK (destination IN ('MARS', 'MOON', 'PLUTO', 'ASTEROID_BELT', 'EUROPA', 'TITAN', 'GANYMEDE')),
    seats         integer NOT NULL CHECK (seats > 0),
    seats_booked  integer NOT NULL DEFAULT 0 CHECK (seats_booked >= 0 AND seats_booked <= seats),
    status        text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    cancellation_reason text CHECK (cancellation_reason IN ('USER_REQUESTED', 'SPACEX_CONFLICT')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One flight per launchpad per day.
CREATE UNIQUE INDEX flights_one_per_pad_day ON flights (launchpad_id, launch_day) WHERE status = 'scheduled';
-- Each destination at most once per launchpad per ISO week.
CREATE UNIQUE INDEX flights_destination_once_per_week ON flights (launchpad_id, week_start, destination) WHERE status = 'scheduled';

CREATE TABLE tickets (
    id            uuid PRIMARY KEY,
    flight_id     uuid NOT NULL REFERENCES flights (id),
    first_name    text NOT NULL,
    last_name     text NOT NULL,
    gender        text NOT NULL CHECK (gender IN ('UNSPECIFIED', 'MALE', 'FEMALE', 'NON_BINARY', 'OTHER')),
    birthday      date NOT NULL,
    launchpad_id  text NOT NULL,
    launch_day    date NOT NULL,
    destination   text NOT NULL,
    status        text NOT NULL DEFAULT 'CONFIRMED' CHECK (status IN ('CONFIRMED', 'CANCELLED')),
    cancellation_reason text CHECK (cancellation_reason IN ('USER_REQUESTED', 'SPACEX_CONFLICT')),
    idempotency_key text UNIQUE,
    request_hash  text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'CANCELLED') = (cancellation_reason IS NOT NULL))
);
CREATE INDEX tickets_keyset ON tickets (created_at, id);
CREATE INDEX tickets_flight ON tickets (flight_id) WHERE status = 'CONFIRMED';
CREATE INDEX tickets_last_name ON tickets (lower(last_name) text_pattern_ops);
CREATE INDEX tickets_first_name ON tickets (lower(first_name) text_pattern_ops);

-- Transactional outbox: written in the transaction of the change, published by the relay.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_type      text NOT NULL,
    aggregate_id    uuid NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_until   timestamptz,
    parked_at       timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
