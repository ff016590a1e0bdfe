"""Consumed offsets stored with the state they produced, for idempotent projections.

A projector calls `load` when partitions are assigned (and seeks there), and `store` inside
the same transaction as the rows a message produced; a replayed message is then either
already reflected together with its offset, or not at all.
"""

from __future__ import annotations

import psycopg


def store(conn: psycopg.Connection, group: str, topic: str, partition: int, offset: int) -> None:
    """Record that `offset` was applied; the next message to read is `offset + 1`."""
    store_many(conn, group, {(topic, partition): offset})


def store_many(conn: psycopg.Connection, group: str, applied: dict[tuple[str, int], int]) -> None:
    """`store` for several (topic, partition) -> last applied offset, in one statement."""
    if not applied:
        return
    topics, partitions = zip(*applied, strict=True)
    conn.execute(
        "INSERT INTO consumed_offsets (group_id, topic, partition, next_offset)"
        " SELECT %s, t, p, o + 1 FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o)"
        " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,"
        " updated_at = now() WHERE consumed_offsets.next_offset < EXCLUDED.next_offset",
        (group, list(topics), list(partitions), list(applied.values())),
    )


def load(conn: psycopg.Connection, group: str, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for partitions this group has applied before."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumed_offsets WHERE group_id = %s AND topic = %s",
        (group, topic),
    )
    return dict(rows.fetchall())
