from pathlib import Path

import pytest
from pydantic import ValidationError

from taskstream.settings import Settings


def test_defaults(monkeypatch):
    for name in Settings.env_names():
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.data_dir, s.api_host, s.api_port) == (Path(".taskstream"), "127.0.0.1", 8000)
    assert s.builtin_registry and s.registry_url() == "http://127.0.0.1:8000/schema-registry"


def test_environment_is_read_with_conventional_names(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h/db")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://sr:8081")
    monkeypatch.setenv("TASKSTREAM_API_PORT", "9001")
    monkeypatch.setenv("TASKSTREAM_ADMIN_TOKEN", "secret-token")
    s = Settings()
    assert s.require_bootstrap() == "k:9092" and s.require_database_url() == "postgresql://u:p@h/db"
    assert not s.builtin_registry and s.registry_url() == "http://sr:8081"
    assert s.registry_auth() is None, "the admin token is not sent to a third-party registry"
    assert "secret-token" not in repr(s), "secrets never appear in reprs or logs"


def test_builtin_registry_uses_the_admin_token(monkeypatch):
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.delenv("SCHEMA_REGISTRY_BASIC_AUTH", raising=False)
    assert Settings(admin_token="t0k").registry_auth() == "admin:t0k"


def test_bad_values_are_refused_and_settings_are_frozen():
    with pytest.raises(ValidationError):
        Settings(api_port=70000)
    s = Settings()
    with pytest.raises(ValidationError):
        s.api_port = 1


def test_missing_infrastructure_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(RuntimeError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        Settings().require_bootstrap()
