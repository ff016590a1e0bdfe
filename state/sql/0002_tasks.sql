-- Task state, owned by the task processor (single writer per task) and read by the API.
-- Type-specific and optional fields live in `fields`; columns are what lists filter/sort on.
CREATE TABLE tasks (
    id                     uuid             PRIMARY KEY,
    task_type              text             NOT NULL,
    status                 text             NOT NULL,
    version                bigint           NOT NULL,
    tenant                 text,
    priority               integer          NOT NULL DEFAULT 0,
    provider_type          text,
    fallback_provider_type text,
    on_fallback            boolean          NOT NULL DEFAULT false,
    retry_count            integer          NOT NULL DEFAULT 0,
    attempt                integer          NOT NULL DEFAULT 1,
    progress               double precision NOT NULL DEFAULT 0,
    created_at             timestamptz      NOT NULL,
    updated_at             timestamptz      NOT NULL,
    started_at             timestamptz,
    completed_at           timestamptz,
    error_message          text,
    error_category         text,
    is_deleted             boolean          NOT NULL DEFAULT false,
    deleted_at             timestamptz,
    idempotency_key        text,
    origin_instance        text,
    origin_zone            text,
    origin_version         text,
    payload_json           text             NOT NULL,
    fields                 jsonb            NOT NULL DEFAULT '{}'
);
CREATE INDEX tasks_created_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX tasks_status_idx ON tasks (status, created_at DESC);

-- Every command's verdict, so the API can answer it (and answer it again on a retry).
CREATE TABLE command_outcomes (
    command_id   uuid        PRIMARY KEY,
    task_id      uuid        NOT NULL,
    command_type text        NOT NULL,
    outcome      text        NOT NULL,
    reason       text,
    status_code  integer,
    version      bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: records to publish, written in the same transaction as the state
-- that produced them and deleted once the broker acknowledged them.
CREATE TABLE outbox (
    id        bigserial PRIMARY KEY,
    partition integer   NOT NULL,
    topic     text      NOT NULL,
    key       text      NOT NULL,
    value     bytea     NOT NULL
);
CREATE INDEX outbox_partition_idx ON outbox (partition, id);

-- Which member owns a partition: each assignment bumps the epoch, and every batch checks it
-- inside its transaction, so a member that lost a partition (a zombie) cannot write.
CREATE TABLE partition_owners (
    group_id  text    NOT NULL,
    partition integer NOT NULL,
    epoch     bigint  NOT NULL,
    owner     text    NOT NULL,
    PRIMARY KEY (group_id, partition)
);
