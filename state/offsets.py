"""Consumed offsets stored with the state they produced, for idempotent projections.

A projector calls `load` when partitions are assigned (and seeks there), and `store` inside
the same transaction as the rows a message produced; a replayed message is then either
already reflected together with its offset, or not at all.
"""

from __future__ import annotations

import psycopg


def store(conn: psycopg.Connection, group: str, topic: str, partition: int, offset: int) -> None:
    """Record that `offset` was applied; the next message to read is `offset + 1`."""
    conn.execute(
        "INSERT INTO consumed_offsets (group_id, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,"
        " updated_at = now() WHERE consumed_offsets.next_offset < EXCLUDED.next_offset",
        (group, topic, partition, offset + 1),
    )


def load(conn: psycopg.Connection, group: str, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for partitions this group has applied before."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumed_offsets WHERE group_id = %s AND topic = %s",
        (group, topic),
    )
    return dict(rows.fetchall())
