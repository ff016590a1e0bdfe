"""The local object store: key safety, atomic writes, prefixes, and no escape via links."""

from __future__ import annotations

import pytest

from state.storage import BadKey, LocalStorage, NotFound, safe_key, task_folder


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


def test_put_get_stat_list_delete(tmp_path):
    store = LocalStorage(tmp_path / "s")
    info = store.put("generations/t1/result.png", b"abc")
    assert (info.key, info.size) == ("generations/t1/result.png", 3)
    store.put("generations/t2/result.png", b"de")
    store.put("uploads/acme/a.png", b"f")
    assert store.get("generations/t1/result.png") == b"abc"
    assert [i.key for i in store.list("generations/")] == [
        "generations/t1/result.png",
        "generations/t2/result.png",
    ]
    assert [i.key for i in store.list("generations/t2")] == ["generations/t2/result.png"]
    assert len(store.list("", limit=2)) == 2
    assert store.delete_prefix("generations/t1") == 1
    with pytest.raises(NotFound):
        store.get("generations/t1/result.png")
    store.delete("uploads/acme/a.png")
    with pytest.raises(NotFound):
        store.delete("uploads/acme/a.png")
    assert not list((tmp_path / "s").rglob(".upload-*"))


def test_links_out_of_the_store_are_refused(tmp_path):
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


def test_task_folders_follow_the_sartiq_layout():
    assert task_folder("GENERATION", "t") == "generations/t"
    assert task_folder("EDITING", "t") == "editings/t"
    assert task_folder("REFINE", "t") == "refines/t"
