"""Tests of the diskcache-backed Store: API, safety, errors, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

from nalar_plugin.errors import (
    ConfigError,
    SerializationError,
    StateCorruptedError,
    StateError,
    StateReadOnlyError,
)
from nalar_plugin.state import SerdeProtocol, Store, default_serde
from nalar_plugin.state.store import MARKER_NAME

# -- helpers run in other processes (module level so spawn can import them) ----


def _increment(store: Store, times: int) -> None:
    for _ in range(times):
        with store.transact():
            store.set("counter", store.get("counter", 0) + 1)
    store.close()


def _open_as_nobody(paths: list[str], queue: Any) -> None:
    """Drop root, then try to open each path; report the error class names."""
    os.setgid(65534)
    os.setuid(65534)
    results = []
    for path in paths:
        try:
            Store(path).close()
            results.append("opened")
        except Exception as exc:
            results.append(type(exc).__name__)
    queue.put(results)


_SENTINEL_FILE = os.path.join(tempfile.gettempdir(), "nalar-state-unpickle-sentinel")


def _touch_sentinel() -> None:
    Path(_SENTINEL_FILE).touch()


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_touch_sentinel, ())


# -- basic API ------------------------------------------------------------------


def test_roundtrip_and_keys(store: Store) -> None:
    store.set("user:1", {"name": "ada", "tags": ["x"]})
    store.set("user:2", 42)
    store.set("user:10", None)
    store.set("other", "z")
    store.set_bytes("raw:1", b"\x00\x01")
    assert store.get("user:1") == {"name": "ada", "tags": ["x"]}
    assert store.get("user:10", "default") is None
    assert store.get("missing", "default") == "default"
    assert store.get_bytes("raw:1") == b"\x00\x01"
    assert store.get("raw:1") == b"\x00\x01"
    assert list(store.keys("user:")) == ["user:1", "user:10", "user:2"]
    assert list(store.keys("user:", reverse=True)) == ["user:2", "user:10", "user:1"]
    assert list(store.keys("user:", limit=2)) == ["user:1", "user:10"]
    assert list(store.keys("nothing")) == []
    assert "user:2" in store and store.contains("other")
    assert store.delete("user:2") is True
    assert store.delete("user:2") is False
    assert "user:2" not in store
    assert store.delete_prefix("user:") == 2
    assert list(store.keys()) == ["other", "raw:1"]


def test_large_values_roundtrip(store: Store) -> None:
    # Values above diskcache's 32 KiB threshold live in separate files.
    big = os.urandom(200_000)
    store.set_bytes("big:raw", big)
    store.set("big:typed", {"blob": big, "text": "x" * 100_000})
    assert store.get_bytes("big:raw") == big
    assert store.get("big:typed") == {"blob": big, "text": "x" * 100_000}
    assert store.delete("big:raw") and store.get_bytes("big:raw") is None


def test_get_bytes_refuses_typed_value(store: Store) -> None:
    store.set("typed", 1)
    with pytest.raises(StateCorruptedError, match="typed value"):
        store.get_bytes("typed")


def test_keys_paginate_and_unicode(store: Store) -> None:
    with store.transact():
        for i in range(1200):
            store.set_bytes(f"p:{i:05d}", b"")
    store.set_bytes("p\U0010ffff", b"")
    store.set_bytes("pé", b"")
    assert len(list(store.keys("p:"))) == 1200
    assert list(store.keys("p:", reverse=True, limit=1)) == ["p:01199"]
    assert "pé" in list(store.keys("p"))


@pytest.mark.parametrize("bad_key", [("tuple", "key"), 1, b"bytes", None])
def test_non_string_keys_are_rejected(store: Store, bad_key: Any) -> None:
    with pytest.raises(SerializationError, match="must be str"):
        store.set(bad_key, 1)
    with pytest.raises(SerializationError, match="must be str"):
        store.get(bad_key)
    assert list(store.keys()) == []


def test_unserialisable_value_names_key_and_type_and_writes_nothing(
    store: Store,
) -> None:
    store.set("k", "before")

    class Opaque:
        pass

    with pytest.raises(SerializationError) as info:
        store.set("k", Opaque())
    assert "'k'" in str(info.value) and "Opaque" in str(info.value)
    assert isinstance(info.value, TypeError)
    assert store.get("k") == "before"
    with pytest.raises(SerializationError, match="needs bytes"):
        store.set_bytes("k", "text")  # type: ignore[arg-type]


def test_expire(store: Store) -> None:
    store.set("short", 1, expire=0.2)
    store.set("long", 2)
    assert store.get("short") == 1
    time.sleep(0.3)
    assert store.get("short") is None
    assert list(store.keys()) == ["long"]
    with pytest.raises(ConfigError):
        store.set("bad", 1, expire=0)


def test_transact_rolls_back_on_error(store: Store) -> None:
    store.set("a", 1)
    with pytest.raises(RuntimeError, match="boom"), store.transact():
        store.set("a", 2)
        store.set("b", 3)
        raise RuntimeError("boom")
    assert store.get("a") == 1
    assert "b" not in store


def test_closed_store_raises(state_dir: Path) -> None:
    store = Store(state_dir)
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.get("x")


def test_timeout_must_be_positive(state_dir: Path) -> None:
    with pytest.raises(ConfigError):
        Store(state_dir, timeout=0)


def test_custom_serde_is_used(state_dir: Path) -> None:
    class UpperSerde:
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            return "upper", json.dumps(obj).upper().encode()

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            return json.loads(data[1].decode())

    serde = UpperSerde()
    assert isinstance(serde, SerdeProtocol)
    with Store(state_dir, serde=serde) as store:
        store.set("k", "abc")
        assert store.get("k") == "ABC"
        assert store.serde is serde


def test_default_serde_is_strict() -> None:
    serde = default_serde()
    assert serde.pickle_fallback is False
    with pytest.raises(NotImplementedError):
        serde.loads_typed(("pickle", pickle.dumps(_Evil())))
    assert not os.path.exists(_SENTINEL_FILE)


# -- directory, marker, corruption --------------------------------------------------


def test_directory_is_private_and_marked(state_dir: Path) -> None:
    with Store(state_dir):
        pass
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    with sqlite3.connect(state_dir / "cache.db") as db:
        (policy,) = db.execute(
            "SELECT value FROM Settings WHERE key = 'eviction_policy'"
        ).fetchone()
    db.close()
    assert policy == "none"  # nothing is ever evicted for size
    marker = json.loads((state_dir / MARKER_NAME).read_text())
    assert marker == {"format": "nalar-state", "version": 1}
    with Store(state_dir) as again:  # reopening a marked directory works
        again.set("k", 1)


def test_empty_existing_directory_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with Store(tmp_path / "empty") as store:
        store.set("k", 1)
    assert (tmp_path / "empty" / MARKER_NAME).exists()


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StateCorruptedError, match="not a nalar state directory"):
        Store(foreign)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]


def test_foreign_diskcache_directory_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    diskcache.Cache(str(other)).close()
    with pytest.raises(StateCorruptedError, match="marker"):
        Store(other)


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StateCorruptedError, match="not a directory"):
        Store(target)


def test_marker_from_newer_format_is_refused(state_dir: Path) -> None:
    Store(state_dir).close()
    (state_dir / MARKER_NAME).write_text(
        json.dumps({"format": "nalar-state", "version": 99})
    )
    with pytest.raises(StateCorruptedError, match="newer"):
        Store(state_dir)


def test_unreadable_marker_is_corruption(state_dir: Path) -> None:
    Store(state_dir).close()
    (state_dir / MARKER_NAME).write_text("{not json")
    with pytest.raises(StateCorruptedError, match="unreadable"):
        Store(state_dir)


def test_corrupted_database_is_reported(state_dir: Path) -> None:
    with Store(state_dir) as store:
        store.set("k", 1)
    for name in os.listdir(state_dir):
        if name.startswith("cache.db-"):
            os.unlink(state_dir / name)
    (state_dir / "cache.db").write_bytes(b"this is not sqlite" * 512)
    with pytest.raises(StateCorruptedError, match="corrupted"):
        Store(state_dir)


def test_pickled_rows_are_never_loaded(store: Store) -> None:
    # Someone with write access adds a pickled row through plain diskcache.
    raw = diskcache.Cache(str(store.path))
    raw.set("evil", _Evil())
    raw.set(("tuple", "key"), b"x")
    raw.close()
    with pytest.raises(StateCorruptedError, match="refusing"):
        store.get("evil")
    assert not os.path.exists(_SENTINEL_FILE)
    listed = list(store.keys())
    assert "evil" in listed  # listed, but never unpickled
    assert all(isinstance(k, str) for k in listed)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    # tmp_path sits under a root-only directory; a lower-privileged process
    # needs a parent it can traverse.
    base = Path(tempfile.mkdtemp(prefix="nalar-ro-"))
    os.chmod(base, 0o755)
    yield base
    for root, dirs, _ in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(base)


def test_read_only_directory_raises(shared_tmp: Path) -> None:
    existing = shared_tmp / "existing"
    with Store(existing) as store:
        store.set("k", 1)
    os.chmod(existing, 0o755)
    for name in os.listdir(existing):
        os.chmod(existing / name, 0o644)
    locked_parent = shared_tmp / "locked"
    locked_parent.mkdir()
    os.chmod(existing, 0o555)
    os.chmod(locked_parent, 0o555)
    paths = [str(existing), str(locked_parent / "new")]
    if os.geteuid() != 0:
        for path in paths:
            with pytest.raises(StateReadOnlyError):
                Store(path)
        return
    # Root ignores permission bits, so the check runs in a child process that
    # drops to the unprivileged "nobody" user first.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_open_as_nobody, args=(paths, queue))
    child.start()
    results = queue.get(timeout=60)
    child.join(60)
    assert results == ["StateReadOnlyError", "StateReadOnlyError"]
    assert issubclass(StateReadOnlyError, PermissionError)


# -- concurrency and pickling -------------------------------------------------------


def test_pickles_by_path(store: Store) -> None:
    store.set("k", {"v": 1})
    clone = pickle.loads(pickle.dumps(store))
    try:
        assert clone.path == store.path
        assert clone.get("k") == {"v": 1}
        clone.set("from-clone", 2)
        assert store.get("from-clone") == 2
    finally:
        clone.close()


def test_transact_no_lost_updates_across_threads(store: Store) -> None:
    def work() -> None:
        for _ in range(50):
            with store.transact():
                store.set("counter", store.get("counter", 0) + 1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("counter") == 300


def test_transact_no_lost_updates_across_processes(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    # The Store itself is sent: it pickles by path and reopens in the child.
    workers = [ctx.Process(target=_increment, args=(store, 40)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert store.get("counter") == 160
