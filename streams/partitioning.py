"""Which partition a keyed record lands in, and new task ids that share one.

Every taskstream producer partitions by key with librdkafka's default partitioner
(`consistent_random`): a keyed record goes to `crc32(key) % partitions` (`partition_for`).

librdkafka sends a produce request per partition, so commands for tasks created in the
same few milliseconds cost one request each when their random ids spread them over every
partition, and so do the events, jobs and reports that follow them through the
co-partitioned topics. `StickyTaskIds` draws random ids until one falls in the partition of
the current time slot, so a burst of creations shares a partition and its requests, while
every partition still gets an equal share over any few slots: the sticky partitioner Kafka
adopted for keyless records (KIP-480), applied to keys the API chooses itself. A slot
(50 ms) spans several batches of the task processor, whose producer lingers 20 ms, so
successive batches share requests too. Ids stay uniformly random UUIDs; a client never sees
the difference, and correctness never depends on it (a topic with another partition count
only loses the batching).
"""

from __future__ import annotations

import os
import time
import uuid
import zlib
from collections.abc import Callable

_DRAW = 8  # candidate ids per read of the OS's random source


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives a record with this key."""
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % partitions


class StickyTaskIds:
    def __init__(
        self,
        partitions: int,
        slot_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._partitions = partitions
        self._slot_s = slot_s
        self._clock = clock
        # Consecutive slots alternate between the two halves of the range (0, 3, 1, 4, 2, 5):
        # the range assignor gives members contiguous blocks, so with two members consecutive
        # slots land on different ones instead of one member taking three slots in a row
        # while the other idles.
        half = (partitions + 1) // 2
        self._order = [p for i in range(half) for p in (i, i + half) if p < partitions]

    def target(self) -> int:
        """The partition of the current time slot."""
        return self._order[int(self._clock() / self._slot_s) % self._partitions]

    def new(self) -> uuid.UUID:
        """A random (version 4) UUID whose string form lands in the current slot's partition.

        1 in `partitions` draws hits. A draw is `uuid.uuid4()`'s 16 random bytes with the
        version and variant bits set as it sets them, hashed in string form without building
        a `UUID` (which cost ~7 us a draw, 41 us an id at 6 partitions; this 13-20 us)."""
        target = self.target()
        while True:
            pool = os.urandom(_DRAW * 16)
            for start in range(0, _DRAW * 16, 16):
                raw = bytearray(pool[start : start + 16])
                raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
                raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
                h = raw.hex()
                text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                if partition_for(text, self._partitions) == target:
                    return uuid.UUID(bytes=bytes(raw))
