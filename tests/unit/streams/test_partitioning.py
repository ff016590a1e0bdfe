"""Sticky task ids: random UUIDs that land in the current time slot's partition."""

from __future__ import annotations

import uuid
from collections import Counter

from streams.partitioning import StickyTaskIds, partition_for


def test_ids_of_one_slot_share_its_partition_and_slots_rotate_over_all():
    now = [100.0]
    ids = StickyTaskIds(6, slot_s=0.05, clock=lambda: now[0])
    seen = Counter()
    for slot in range(60):
        now[0] = 100.0 + slot * 0.05 + 0.01
        batch = [ids.new() for _ in range(20)]
        partitions = {partition_for(str(i), 6) for i in batch}
        assert partitions == {ids.target()}
        assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in batch)
        assert len(set(batch)) == 20
        seen[ids.target()] += 1
    assert seen == dict.fromkeys(range(6), 10)  # every partition gets an equal share


def test_consecutive_slots_alternate_between_the_halves_of_the_range():
    def targets(partitions: int) -> list[int]:
        now = [0.0]
        ids = StickyTaskIds(partitions, slot_s=1.0, clock=lambda: now[0])
        found = []
        for slot in range(partitions):
            now[0] = slot + 0.5
            found.append(ids.target())
        return found

    assert targets(6) == [0, 3, 1, 4, 2, 5]  # range assignor, two members: 0-2 and 3-5
    assert targets(5) == [0, 3, 1, 4, 2]
    assert targets(1) == [0]
