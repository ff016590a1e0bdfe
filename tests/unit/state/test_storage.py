"""Object storage: key safety, and one contract run against the local store and S3 (moto's
in-process S3), plus the local store's refusal to follow links out of its root."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from state.storage import (
    BadKey,
    LocalStorage,
    NotFound,
    PathTaken,
    S3Storage,
    Storage,
    safe_key,
    storage_from_settings,
    stored_key,
    task_folder,
)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a//b",
        "a/./b",
        "a\\b",
        "a/b/",
        "a/\x00",
        "a/ b",
        "x" * 513,
        "uploads/" + "x" * 256 + ".png",  # longer than a file name may be
    ],
)
def test_unsafe_keys_are_refused(key):
    with pytest.raises(BadKey):
        safe_key(key)


@pytest.mark.parametrize(
    "key", ["a.png", "generations/1f/result.png", "uploads/acme/x_1-2.v=3.png"]
)
def test_safe_keys_pass(key):
    assert safe_key(key) == key


def fake_aws_credentials(monkeypatch) -> None:
    """moto serves any credentials, but boto3 wants some and a region."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "s")
        return
    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="media")
        yield storage_from_settings(tmp_path, "s3://media/tenant-a")


def test_both_stores_list_in_key_order_with_a_prefix_and_a_limit(store):
    # '-' < '.' < '/' < '0': a folder's keys sort between its neighbours as strings do
    keys = ["a/b.png", "a.png", "a-b.png", "a0.png", "a/c/d.png", "b.png", "ab/x.png"]
    for key in keys:
        store.put(key, b"x")
    assert [i.key for i in store.list("", limit=100)] == sorted(keys)
    assert [i.key for i in store.list("a/", limit=100)] == ["a/b.png", "a/c/d.png"]
    assert [i.key for i in store.list("a", limit=3)] == sorted(keys)[:3]
    assert [i.key for i in store.list("a/c", limit=100)] == ["a/c/d.png"]
    assert store.list("zz/", limit=100) == []


def test_a_local_listing_reads_only_the_folders_it_needs(tmp_path, monkeypatch):
    """The first page of a large store used to walk and sort the whole tree."""
    store = LocalStorage(tmp_path / "s")
    for i in range(30):
        store.put(f"generations/t{i:02d}/result.png", b"x")
    scanned: list[str] = []
    real = os.scandir

    def counting(path):
        scanned.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    assert [i.key for i in store.list("generations/", limit=2)] == [
        "generations/t00/result.png",
        "generations/t01/result.png",
    ]
    assert len(scanned) == 3, scanned  # generations/, t00/, t01/
    scanned.clear()
    assert [i.key for i in store.list("generations/t17", limit=5)] == ["generations/t17/result.png"]
    assert len(scanned) == 2, scanned  # generations/, t17/


def test_put_get_stat_list_delete(store):
    info = store.put("generations/t1/result.png", b"abc")
    assert (info.key, info.size) == ("generations/t1/result.png", 3)
    store.put("generations/t2/result.png", b"de")
    store.put("uploads/acme/a.png", b"f")
    assert store.get("generations/t1/result.png") == b"abc"
    assert store.stat("generations/t2/result.png").size == 2
    assert [i.key for i in store.list("generations/")] == [
        "generations/t1/result.png",
        "generations/t2/result.png",
    ]
    assert [i.key for i in store.list("generations/t2")] == ["generations/t2/result.png"]
    assert len(store.list("", limit=2)) == 2
    assert store.delete_prefix("generations/t1") == 1
    with pytest.raises(NotFound):
        store.get("generations/t1/result.png")
    with pytest.raises(NotFound):
        store.stat("generations/t1/result.png")
    store.delete("uploads/acme/a.png")
    with pytest.raises(NotFound):
        store.delete("uploads/acme/a.png")
    for bad in ("../x", "/abs", "a//b"):
        with pytest.raises(BadKey):
            store.put(bad, b"no")


def test_the_s3_prefix_isolates_and_cannot_be_escaped(tmp_path, monkeypatch):
    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="media")
        a, b = S3Storage("media", "a"), S3Storage("media", "b")
        a.put("x/1.png", b"1")
        assert b.list("") == [] and [i.key for i in a.list("")] == ["x/1.png"]
        with pytest.raises(BadKey):
            b.get("../a/x/1.png")
    with pytest.raises(ValueError, match="s3://bucket"):
        storage_from_settings(tmp_path, "http://media")


def test_links_out_of_the_local_store_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"secret")
    store = LocalStorage(tmp_path / "s")
    (tmp_path / "s" / "generations").mkdir()
    (tmp_path / "s" / "generations" / "t").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BadKey):
        store.get("generations/t/x.png")
    with pytest.raises(BadKey):
        store.put("generations/t/y.png", b"no")
    assert store.list("generations/") == []
    assert not (outside / "y.png").exists()
    assert not list((tmp_path / "s").rglob(".upload-*"))


def test_task_folders_follow_the_sartiq_layout():
    assert task_folder("GENERATION", "t") == "generations/t"
    assert task_folder("EDITING", "t") == "editings/t"
    assert task_folder("REFINE", "t") == "refines/t"


def test_a_key_under_an_object_or_in_a_folders_place_is_taken(tmp_path):
    store = LocalStorage(tmp_path / "s")
    store.put("uploads/acme/a.png", b"f")
    store.put("uploads/acme/refs/b.png", b"g")
    with pytest.raises(PathTaken, match="uploads/acme/a.png is an object, so nothing can be"):
        store.put("uploads/acme/a.png/c.png", b"h")
    with pytest.raises(PathTaken, match="uploads/acme/refs is a folder of other objects"):
        store.put("uploads/acme/refs", b"h")
    assert store.get("uploads/acme/a.png") == b"f"
    assert [i.key for i in store.list("uploads/")] == [
        "uploads/acme/a.png",
        "uploads/acme/refs/b.png",
    ]
    assert store.put("uploads/acme/" + "x" * 251 + ".png", b"i").size == 1  # 255 characters


def test_stored_key_tells_storage_paths_from_inline_and_remote_images():
    png = base64.b64encode(bytes(range(256)) * 3).decode()  # no padding, and '/' inside
    assert "/" in png and not png.endswith("=")
    for ref, key in (
        ("uploads/acme/a.png", "uploads/acme/a.png"),
        ("  generations/1f/result.png ", "generations/1f/result.png"),
        (png, None),
        (png + "==", None),
        ("data:image/png;base64," + png, None),
        ("https://example.com/a.png", None),
        ("s3://bucket/a.png", None),
        ("a.png", "a.png"),
        ("../../etc/passwd", "../../etc/passwd"),  # a path, which safe_key refuses where used
        ("uploads/acme/no-suffix", None),  # base64 to the worker, which says it is neither
    ):
        assert stored_key(ref) == key, ref
