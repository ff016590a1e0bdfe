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
