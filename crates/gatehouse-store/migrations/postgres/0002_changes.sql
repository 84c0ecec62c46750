-- What each config version changed, so other nodes read a one-route edit as one row instead
-- of the whole config. kind/id of every entity written or deleted; a whole-config
-- replacement is one row of kind '*'. Old rows are pruned by the writers (a node further
-- behind than what is kept reads the whole config). `build` identifies the writer's
-- validation rules (version and config schema): a node of the same build need not validate
-- again what the writer validated.
CREATE TABLE changes (
    version BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    id      TEXT   NOT NULL,
    build   TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX changes_version ON changes (version);
