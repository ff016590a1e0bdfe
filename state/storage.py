"""Object storage for task inputs and results, behind one interface.

Paths are relative, slash-separated keys in the Sartiq layout (`generations/{task_id}/…`,
`editings/{task_id}/…`, `refines/{task_id}/…`, `uploads/{tenant}/…`). `safe_key` is the one
gate every path goes through: no absolute paths, no `..`, no empty or dot segments, no
backslashes or control characters. `LocalStorage` also resolves the final path and refuses
anything that lands outside its root, so a symlink planted inside cannot leak a file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255  # a file name's limit on the usual filesystems
#: One segment of a key (and so a tenant name, which names its upload folder).
SEGMENT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._=+-]*$"
_SEGMENT = re.compile(SEGMENT_PATTERN)
#: Result folders per task kind, as the Sartiq API lays them out.
KIND_FOLDERS = {"GENERATION": "generations", "EDITING": "editings", "REFINE": "refines"}


class BadKey(ValueError):
    """A storage path that could escape the store or is not a valid key."""


class NotFound(KeyError):
    """No object under that key."""


class PathTaken(ValueError):
    """A key that names a folder of other objects, or lies under a key that is an object."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def safe_key(key: str) -> str:
    """`key` if it is a safe relative object key, else `BadKey` with the reason."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadKey(f"a storage path has 1 to {MAX_KEY_LENGTH} characters")
    if key.startswith("/") or "\\" in key:
        raise BadKey("storage paths are relative and use '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise BadKey("storage paths may not contain empty, '.' or '..' segments")
        if not _SEGMENT.match(segment):
            raise BadKey(
                f"segment {segment!r} must be letters, digits and ._=+- and must not start"
                " with . = + or -"
            )
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise BadKey(f"a storage path's segments have at most {MAX_SEGMENT_LENGTH} characters")
    return key


def stored_key(ref: str) -> str | None:
    """The storage key an image reference names, or None when it is inline or remote: a data
    URL, an URL with a scheme, or base64. Stored files are named with a suffix
    (`uploads/acme/a.png`), and base64 may hold `/` but never a `.`, so a `.` tells them apart.
    (The key is not checked here: `safe_key` does that where it is used.)"""
    ref = ref.strip()
    if ref.startswith("data:") or urlparse(ref).scheme:
        return None
    return ref if "." in ref else None


def task_folder(task_type: str, task_id: object) -> str:
    """Where a task's files live: `generations/{task_id}` for GENERATION, and so on."""
    return f"{KIND_FOLDERS.get(task_type, task_type.lower() + 's')}/{task_id}"


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> ObjectInfo: ...
    def get(self, key: str) -> bytes: ...
    def stat(self, key: str) -> ObjectInfo: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def list(self, prefix: str = "", limit: int = 100) -> list[ObjectInfo]: ...


class LocalStorage:
    """Objects as files under `root`; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = self.root / safe_key(key)
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise BadKey("storage path resolves outside the store")
        return resolved

    def put(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._taken(key) from None
        self._path(key)  # the parents may be links created meanwhile: check again
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except IsADirectoryError:
            Path(tmp).unlink(missing_ok=True)
            raise self._taken(key) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.stat(key)

    def _taken(self, key: str) -> PathTaken:
        """Why `key` cannot be written: an object above it, or a folder in its place."""
        parts = key.split("/")
        for end in range(1, len(parts)):
            above = "/".join(parts[:end])
            if (self.root / above).is_file():
                return PathTaken(f"{above} is an object, so nothing can be stored under it")
        return PathTaken(f"{key} is a folder of other objects")

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(key)
        return path.read_bytes()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(key)
        st = path.stat()
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(key)
        path.unlink()

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under folder `prefix`; returns how many."""
        path = self._path(prefix)
        if not path.is_dir():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count

    def list(self, prefix: str = "", limit: int = 100) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order (as S3 lists them), at most
        `limit`. The walk reads folders in that order and stops at `limit`, entering only
        folders that can hold a matching key: listing the first page of a large store reads
        a few folders, not the whole tree."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        found: list[ObjectInfo] = []
        for key, path in self._walk(base, folder + "/" if folder else "", prefix):
            if self.root not in path.resolve().parents:
                continue  # a link pointing out of the store
            st = path.stat()
            found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
            if len(found) >= limit:
                break
        return found

    def _walk(self, folder: Path, at: str, prefix: str) -> Iterator[tuple[str, Path]]:
        """(key, path) of the files under `folder` (whose keys start with `at`) that start
        with `prefix`, in key order: a folder's entries sort by name, a subfolder's as
        name + "/" (every key in it continues so). Links to folders are not followed."""
        try:
            with os.scandir(folder) as scan:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                    for e in scan
                    if not e.name.startswith(".upload-")
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in sorted(entries, key=lambda pair: pair[0]):
            key = at + name
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if name.endswith("/"):
                yield from self._walk(Path(entry.path), key, prefix)
            elif entry.is_file() and key.startswith(prefix):
                yield key, Path(entry.path)


class S3Storage:
    """Objects in an S3-compatible bucket (AWS, R2, MinIO) under an optional key prefix.

    Keys pass the same `safe_key` gate as the local store, so the same paths are refused
    everywhere and a prefix cannot be escaped. Credentials and region come from the usual
    AWS environment; `endpoint_url` selects a non-AWS service.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3

        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return self._prefix + safe_key(key)

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def put(self, key: str, data: bytes) -> ObjectInfo:
        self._s3.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)
        return self.stat(key)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self._s3.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                raise NotFound(key) from None
            raise

    def stat(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if self._missing(exc):
                raise NotFound(key) from None
            raise
        return ObjectInfo(key, head["ContentLength"], head["LastModified"])

    def delete(self, key: str) -> None:
        self.stat(key)  # S3 deletes are silent about missing keys; the interface is not
        self._s3.delete_object(Bucket=self._bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self._iter(safe_key(prefix) + "/")]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at a time
            chunk = keys[start : start + 1000]
            self._s3.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True},
            )
        return len(keys)

    def list(self, prefix: str = "", limit: int = 100) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for info in self._iter(prefix):
            found.append(info)
            if len(found) >= limit:
                break
        return found

    def _iter(self, prefix: str) -> Iterator[ObjectInfo]:
        if prefix and not prefix.endswith("/"):
            safe_key(prefix)
        elif prefix:
            safe_key(prefix.rstrip("/"))
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._prefix + prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self._prefix) :]
                yield ObjectInfo(key, obj["Size"], obj["LastModified"])


def storage_from_settings(root: Path, url: str | None) -> Storage:
    """`s3://bucket/prefix` (endpoint from AWS_ENDPOINT_URL) or the local store at `root`."""
    if url:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"storage URL must be s3://bucket[/prefix], got {url!r}")
        return S3Storage(parsed.netloc, parsed.path, os.environ.get("AWS_ENDPOINT_URL"))
    return LocalStorage(root)
