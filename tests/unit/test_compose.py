"""docker-compose.yml stays in step with the settings classes and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taskstream.cli import parser
from taskstream.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: svc for name, svc in SERVICES.items() if svc.get("image") == "taskstream:latest"}


def test_infrastructure_services_exist():
    assert {"kafka", "schema-registry", "postgres"} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", (
        "KRaft, no ZooKeeper"
    )


def test_all_four_taskstream_services_exist():
    assert {svc["command"][1] for svc in OURS.values()} == {"api", "processors", "worker"}
    assert len(OURS) == 4


@pytest.mark.parametrize("name", sorted(OURS))
def test_service_environment_matches_the_settings(name):
    env = OURS[name]["environment"]
    unknown = set(env) - Settings.env_names()
    assert not unknown, f"{name} sets variables no settings class reads: {unknown}"
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "SCHEMA_REGISTRY_URL",
        "TASKSTREAM_ADMIN_TOKEN",
    } <= set(env)
    # The values must validate, too (placeholders aside).
    values = {k: (v if "${" not in str(v) else "x") for k, v in env.items()}
    Settings(**{_field(k): v for k, v in values.items()})


@pytest.mark.parametrize("name", sorted(OURS))
def test_service_command_is_a_valid_cli_call(name):
    parser().parse_args(OURS[name]["command"][1:])


@pytest.mark.parametrize("name", ["worker-inference", "worker-training"])
def test_workers_reserve_a_gpu(name):
    devices = OURS[name]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def _field(env_name: str) -> str:
    for name, field in Settings.model_fields.items():
        if env_name in (
            f"TASKSTREAM_{name.upper()}",
            *getattr(field.validation_alias, "choices", ()),
        ):
            return field.validation_alias.choices[0] if field.validation_alias else name
    raise KeyError(env_name)
