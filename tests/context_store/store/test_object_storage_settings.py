"""LanceDB object-storage settings: file, environment, and what ``save()`` keeps out of files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from context_store.settings import Settings
from context_store.store.context_store import ContextStore


def test_s3_options_reach_the_vector_index(tmp_path: Path) -> None:
    (tmp_path / "freshcontext.yaml").write_text(
        yaml.safe_dump(
            {
                "lancedb_uri": "s3://kb/lancedb",
                "object_storage": {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "allow_http": True},
            }
        )
    )
    store = ContextStore(Settings.load(tmp_path))
    assert store.index.uri == "s3://kb/lancedb"
    assert store.index.storage_options == {
        "aws_endpoint": "http://127.0.0.1:9000", "aws_region": "eu-west-1", "allow_http": "true",
    }


def test_keys_come_from_the_environment_and_are_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHCONTEXT_LANCEDB_URI", "s3://kb/lancedb")
    monkeypatch.setenv("FRESHCONTEXT_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("FRESHCONTEXT_S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("FRESHCONTEXT_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    monkeypatch.setenv("FRESHCONTEXT_S3_ALLOW_HTTP", "true")
    settings = Settings.load(tmp_path)
    options = settings.vector_storage_options()
    assert options == {
        "aws_endpoint": "http://minio:9000", "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI", "allow_http": "true",
    }
    assert "wJalrXUtnFEMI" not in repr(settings)  # SecretStr: not in logs or tracebacks either
    saved = settings.save().read_text()
    assert "wJalrXUtnFEMI" not in saved and "AKIDEXAMPLE" not in saved and "minio:9000" in saved


def test_a_local_directory_gets_no_storage_options(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, object_storage={"endpoint": "http://127.0.0.1:9000"})
    assert settings.vector_storage_options() is None
    assert "object_storage" not in (yaml.safe_load(Settings.load(tmp_path).save().read_text()) or {})
