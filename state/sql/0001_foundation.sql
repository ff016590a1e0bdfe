-- Offsets applied by idempotent projections, stored in the same transaction as their rows.
CREATE TABLE consumed_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Built-in schema registry (Confluent REST subset). Ids are global and immutable; the
-- same schema text under two subjects shares one id, as in Confluent's registry.
CREATE TABLE registry_schemas (
    id          serial      PRIMARY KEY,
    fingerprint text        NOT NULL UNIQUE,
    schema_text text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE registry_versions (
    subject    text        NOT NULL,
    version    integer     NOT NULL,
    schema_id  integer     NOT NULL REFERENCES registry_schemas (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version),
    UNIQUE (subject, schema_id)
);

-- API tokens, stored as SHA-256 of the token (tokens are 256-bit random, so no salt or
-- slow hash is needed to resist guessing).
CREATE TABLE api_tokens (
    token_hash text        PRIMARY KEY,
    role       text        NOT NULL CHECK (role IN ('admin', 'user')),
    tenant     text,
    label      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
