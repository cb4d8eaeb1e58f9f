-- What devices report in their update checks and asset requests, aggregated per UTC day.
-- Distinct-device counts are stored per recording process (`replica`, a random id per start) as
-- mergeable counts (aloft_core::distinct), each process rewriting its own row; readers merge the
-- rows. Merging is a union, so rows of several replicas, days or restarts never count a device
-- twice. Plain counters are added to in place.

-- Per update and platform: devices served its manifest, that downloaded its launch asset
-- (installed), that checked while running it (launched), that reported its launch failed.
CREATE TABLE insight_devices (
    update_id  TEXT    NOT NULL,
    platform   TEXT    NOT NULL,
    day        BIGINT  NOT NULL,   -- days since 1970-01-01, UTC
    event      TEXT    NOT NULL,   -- served | installed | launched | failed
    replica    TEXT    NOT NULL,
    app_id     BIGINT  NOT NULL,
    devices    BYTEA    NOT NULL,
    PRIMARY KEY (update_id, platform, day, event, replica)
);

-- Per channel, platform and runtime version: devices on the embedded update (running =
-- 'embedded') and on each update (its id).
CREATE TABLE insight_fleet (
    app_id          BIGINT  NOT NULL,
    channel         TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    runtime_version TEXT    NOT NULL,
    running         TEXT    NOT NULL,
    day             BIGINT  NOT NULL,
    replica         TEXT    NOT NULL,
    devices         BYTEA    NOT NULL,
    PRIMARY KEY (app_id, channel, platform, runtime_version, running, day, replica)
);

-- `Expo-Fatal-Error` texts reported by devices running an update, with how often.
CREATE TABLE insight_fatal_errors (
    update_id    TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    day          BIGINT  NOT NULL,
    message_hash TEXT    NOT NULL,   -- SHA-256 of the message, base64url
    message      TEXT    NOT NULL,
    reports      BIGINT  NOT NULL,
    app_id       BIGINT  NOT NULL,
    PRIMARY KEY (update_id, platform, day, message_hash)
);

-- Checks naming a channel the app does not have: a build configured for a channel nobody
-- created shows up here instead of as an error on the device.
CREATE TABLE insight_unknown_channels (
    app_id  BIGINT  NOT NULL,
    channel TEXT    NOT NULL,
    day     BIGINT  NOT NULL,
    checks  BIGINT  NOT NULL,
    PRIMARY KEY (app_id, channel, day)
);
