"""nalar.gc-freeze: full GC passes skip what existed when the first Runtime opened, until the last one closes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import nalar_plugin as nl


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    assert gc.get_freeze_count() == 0, "a closed Runtime left the heap frozen"
    yield
    gc.unfreeze()


def _runtime(tmp_path: Path, name: str, **settings: object) -> nl.Runtime:
    return nl.Runtime(state_dir=str(tmp_path / name), **settings)


def test_what_existed_at_open_is_frozen_until_close(tmp_path: Path) -> None:
    node = _Node()
    alive = weakref.ref(node)
    with _runtime(tmp_path, "a"):
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: a cycle from before the Runtime waits for its close
        made_inside = _Node()
        inside = weakref.ref(made_inside)
        del made_inside
        gc.collect()
        assert inside() is None  # what is made while it is open is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # reclaimed once the Runtime closed


def test_the_setting_turns_it_off(tmp_path: Path) -> None:
    with _runtime(tmp_path, "a", gc_freeze=False):
        assert gc.get_freeze_count() == 0


def test_a_process_that_freezes_its_heap_itself_is_left_alone(tmp_path: Path) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    # (The count shrinks when a frozen object is freed by its reference count.)
    with _runtime(tmp_path, "a"):
        assert 0 < gc.get_freeze_count() <= frozen  # nothing more frozen
    assert 0.9 * frozen < gc.get_freeze_count() <= frozen  # and nothing thawed


def test_the_last_of_two_runtimes_thaws(tmp_path: Path) -> None:
    first = _runtime(tmp_path, "a")
    after_first = gc.get_freeze_count()
    second = _runtime(tmp_path, "b")
    assert gc.get_freeze_count() > after_first  # the second cluster's objects are frozen too
    first.close()
    assert gc.get_freeze_count() > 0  # the second Runtime is still open
    second.close()
    assert gc.get_freeze_count() == 0
