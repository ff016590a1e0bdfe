-- Task counter changes not yet published (ADR 9). Each batch of the task processor adds its
-- change to its partitions' rows, in the batch's transaction; about twice a second a batch
-- moves a partition's row into the outbox as one TaskCountsDelta. Only the partition's
-- owner (fenced by partition_owners) writes its row.
CREATE TABLE pending_counts (
    group_id        text    NOT NULL,
    partition       integer NOT NULL,
    deltas          jsonb   NOT NULL,  -- counter -> change
    source_offsets  jsonb   NOT NULL,  -- topic -> last offset of the batches it sums
    PRIMARY KEY (group_id, partition)
);
