"""What Postgres must forget, and publish again, when the embedded broker starts empty.

The embedded broker keeps its topics in memory (ADR 3): every `taskstream up` starts it
empty while Postgres keeps the tasks. Three things in Postgres refer to the broker that is
gone, and `taskstream up` settles them, in one transaction, before any service starts:

- The task processor's consumed offsets are positions in logs that no longer exist. Kept,
  they would seek each fresh partition past the first commands written to it: the API
  answered those 202 and they were never applied.
- The stream tables' counters lived in changelog topics, so the fresh tables start at zero.
  Each partition's pending counter change becomes its tasks' whole contribution, which the
  processors publish as that partition's first `TaskCountsDelta` (with no source offsets, so
  a fresh table applies it once, and every later delta after it); count deltas still in
  the outbox are dropped, as the rebuilt sums already hold them.
- The jobs of tasks still PENDING or EXECUTING were on the job topics. Each goes back into
  the outbox (unless one is there unpublished), and a worker runs it as the same attempt.

Commands the old broker had accepted and the processors had not yet applied are gone with
it: the API had answered them 202 (still being applied) at best.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime

from processors import task_counts
from processors.task_machine import ACTIVE, job, job_topic
from processors.task_processor import GROUP
from state import task_store
from state.db import Database
from streams.partitioning import partition_for
from streams.queues import Queues
from streams.serde import AvroSerde
from streams.topics import TASK_COMMANDS, TASK_COUNTS
from taskstream import jsonio

logger = logging.getLogger(__name__)


def resume_on_fresh_broker(db: Database, serde: AvroSerde, queues: Queues) -> None:
    now = datetime.now(UTC)
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    tasks = 0
    with db.transaction() as conn:
        queued = {
            key
            for (key,) in conn.execute(
                "SELECT key FROM outbox WHERE topic = ANY(%s)",
                ([topic.name for topic in queues.job_topics()],),
            )
        }
        jobs: list[tuple[int, str, str, bytes]] = []
        for state in task_store.all_states(conn):
            tasks += 1
            key = str(state.task_id)
            partition = partition_for(key, TASK_COMMANDS.partitions)
            counts[partition].update(task_counts.contribution(state))
            if state.status in ACTIVE and key not in queued:
                record = job(state, now)
                jobs.append(
                    (partition, job_topic(record, queues).name, key, serde.serialize(record))
                )
        offsets = conn.execute("DELETE FROM consumed_offsets").rowcount
        conn.execute("DELETE FROM outbox WHERE topic = %s", (TASK_COUNTS.name,))
        conn.execute("DELETE FROM pending_counts WHERE group_id = %s", (GROUP,))
        for partition, contribution in sorted(counts.items()):
            # created_minute buckets the tables would prune at once stay out of the delta,
            # which a long history would otherwise swell past the broker's record size
            current = {
                counter: n
                for counter, n in contribution.items()
                if not task_counts.expired(task_counts.table_key(partition, counter), now)
            }
            conn.execute(
                "INSERT INTO pending_counts (group_id, partition, deltas, source_offsets)"
                " VALUES (%s, %s, %s::jsonb, '{}'::jsonb)",
                (GROUP, partition, jsonio.dumps(current)),
            )
        if jobs:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO outbox (partition, topic, key, value) VALUES (%s, %s, %s, %s)",
                    jobs,
                )
    if tasks or offsets:
        logger.info(
            "fresh embedded broker: %d tasks recounted, %d jobs of active tasks queued again,"
            " %d consumed offsets of the old broker forgotten",
            tasks,
            len(jobs),
            offsets,
        )
