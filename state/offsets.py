"""Consumed offsets stored with the state they produced, for idempotent projections.

A projector calls `load` when partitions are assigned (and seeks there), and stores the
offsets it applied in the same transaction as the rows they produced; a replayed message is
then either already reflected together with its offset, or not at all. The task processor
stores them inside its one-statement batch write (`task_store.apply_batch`), which only ever
moves an offset forward.
"""

from __future__ import annotations

import psycopg


def load(conn: psycopg.Connection, group: str, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for partitions this group has applied before."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumed_offsets WHERE group_id = %s AND topic = %s",
        (group, topic),
    )
    return dict(rows.fetchall())
