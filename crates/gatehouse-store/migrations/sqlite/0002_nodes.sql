-- The node registry: one row per node, refreshed by its heartbeat.
CREATE TABLE nodes (
    id             TEXT    PRIMARY KEY,
    hostname       TEXT    NOT NULL,
    addresses      TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    config_version INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL
);
