"""Stubs the state tests run; in a module so that worker processes can import them."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import nalar_plugin as nl
from nalar_plugin.state import managed_dict, managed_list

notes = managed_list("notes")  # one module-level handle serves every session


@nl.tool
def note(item: Any, fail: bool = False) -> int:
    """Append to the session's notes; the count seen includes this call's own write."""
    notes.append(item)
    managed_dict("seen")[item] = True
    if fail:
        raise RuntimeError("boom after writing")
    return len(notes)


@nl.tool
def counted(path: str, x: int) -> int:
    """Count executions of the body in a file, and make a managed effect."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{x}\n")
    managed_list("effects").append(x)
    return x * 2


@nl.tool(idempotent=True)
def counted_freely(path: str, x: int) -> int:
    """Like :func:`counted`, but idempotent: no journal."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{x}\n")
    managed_dict("last")["x"] = x
    return x * 2


@nl.agent
async def anote(item: str) -> list[str]:
    notes.append(item)
    await asyncio.sleep(0.01)
    return notes.copy()


@nl.agent
def nested_notes(n: int) -> list[Any]:
    """Make ``n`` nested tool calls, then read what they committed."""
    for i in range(n):
        note(f"nested-{i}").result()
    return notes.copy()


@nl.tool
def bad_write() -> None:
    managed_dict("d")["k"] = object()


@nl.tool
def bad_result() -> Any:
    notes.append("should not land")
    return object()


@nl.tool
def mixed_kinds() -> None:
    managed_list("x").append(1)
    managed_dict("x")["k"] = 1


@nl.tool
def where() -> dict[str, Any]:
    notes.append(os.getpid())
    return {"pid": os.getpid(), "cwd": os.getcwd()}


@nl.tool
def slow_pid(path: str, seconds: float) -> int:
    """Report this worker's pid in ``path``, then wait (a window to kill it in)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {nl.current_call().attempt}\n")  # type: ignore[union-attr]
    time.sleep(seconds)
    return os.getpid()


@nl.tool
async def alog(path: str, seconds: float) -> str:
    """Log that the body started in ``path``, then await (a window to cancel it in)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("started\n")
    await asyncio.sleep(seconds)
    return "done"
