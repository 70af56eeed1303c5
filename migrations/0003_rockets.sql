-- Rocket telemetry: every message as received, and each rocket's state, kept up to
-- date incrementally in the transaction that stores the messages (src/rockets/store.rs).

-- One row per (channel, message number): the primary key is what makes a resent
-- message a no-op.
CREATE TABLE rocket_messages (
    channel        uuid        NOT NULL,
    message_number bigint      NOT NULL CHECK (message_number >= 1),
    message_type   text        NOT NULL CHECK (message_type IN ('RocketLaunched', 'RocketSpeedIncreased', 'RocketSpeedDecreased', 'RocketExploded', 'RocketMissionChanged')),
    message_time   timestamptz NOT NULL,
    -- Type, payload and exact messageTime: a resend with the same number but another
    -- fingerprint is a conflict (the first message is kept).
    fingerprint    jsonb       NOT NULL,
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (channel, message_number)
);

-- The summary of a rocket's messages (src/rockets/state.rs `Summary`): each
-- "lowest/highest-numbered" value is kept with the number of the message that set
-- it, so that a late message can be merged without reading the others. Speed,
-- status and missing messages are derived when read (src/rockets/store.rs).
-- Written only by the batch statement, thousands of times a second: no generated
-- columns and no CHECK constraints, whose expressions PostgreSQL would rebuild at
-- every statement; room on each page for HOT updates.
CREATE TABLE rockets (
    channel             uuid PRIMARY KEY,
    launch_number       bigint,
    rocket_type         text,
    launch_speed        bigint,
    launched_at         timestamptz,
    speed_delta         bigint      NOT NULL,
    mission_number      bigint,
    mission             text,
    exploded_number     bigint,
    explosion_reason    text,
    last_message_number bigint      NOT NULL,
    last_message_time   timestamptz NOT NULL,
    messages_received   bigint      NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
) WITH (fillfactor = 50);
