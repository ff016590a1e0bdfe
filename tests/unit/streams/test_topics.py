from streams.topics import ALL, PRIMARY, WORKER_HEARTBEATS, by_name


def test_names_are_unique_and_resolvable():
    names = [t.name for t in ALL]
    assert len(names) == len(set(names))
    assert all(by_name(n).name == n for n in names)


def test_every_deletable_topic_has_a_dead_letter_topic():
    dlqs = {t.name for t in ALL if t.name.endswith(".dlq")}
    assert dlqs == {f"{t.name}.dlq" for t in PRIMARY if not t.compacted}


def test_heartbeats_are_compacted_by_worker():
    assert WORKER_HEARTBEATS.compacted and WORKER_HEARTBEATS.config["cleanup.policy"] == "compact"
    assert WORKER_HEARTBEATS.key == "worker_id"


def test_design_card_topics_exist():
    for name in [
        "tasks.commands",
        "tasks.events",
        "inference.jobs",
        "inference.jobs.priority",
        "training.jobs",
        "inference.status",
        "training.status",
        "preprocessing.status",
        "workflows.commands",
        "workflows.events",
        "workers.heartbeats",
        "webhooks.retry",
    ]:
        by_name(name)


def test_task_keyed_topics_are_co_partitioned():
    """The task processor reads commands and worker reports together; a task's messages must
    land on the same partition number in each, or two members would both own the task."""
    keyed = [t for t in PRIMARY if t.key == "task_id"]
    assert len({t.partitions for t in keyed}) == 1, {t.name: t.partitions for t in keyed}
