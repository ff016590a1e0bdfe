"""Sticky task ids: random UUIDs that land in the current time slot's partition."""

from __future__ import annotations

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
        assert all(i.version == 4 for i in batch) and len(set(batch)) == 20
        seen[ids.target()] += 1
    assert seen == dict.fromkeys(range(6), 10)  # every partition gets an equal share
