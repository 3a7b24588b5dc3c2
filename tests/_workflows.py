"""Stubs the tests run; in a module so that worker processes can import them."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import nalar_plugin as nl


@nl.tool
def add(a: int, b: int) -> int:
    return a + b


@nl.tool
def total(xs: Any) -> int:
    if isinstance(xs, dict):
        return sum(xs.values())
    return sum(xs)


@nl.agent
async def asleep(x: Any, seconds: float = 0.5) -> Any:
    await asyncio.sleep(seconds)
    return x


@nl.agent
def sleep(x: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return x


@nl.agent
def stamp(x: Any) -> float:
    """Return when it ran."""
    return time.time()


class CustomError(Exception):
    pass


@nl.tool
def explode(msg: str) -> None:
    raise CustomError(msg)


@nl.agent
def whoami() -> dict[str, Any]:
    ctx = nl.current_call()
    assert ctx is not None
    return {"session": ctx.session, "call_id": ctx.call_id, "parent": ctx.parent, "pid": os.getpid(),
            "thread": threading.current_thread().name}


@nl.agent
def nested_sum(n: int) -> int:
    """Fan out n nested calls and sum them (blocks on their values inside a call)."""
    return sum(nl.value([add(i, i) for i in range(n)]))


@nl.agent
def deep(depth: int) -> int:
    """Each level waits on the next: needs a slot per level unless waiting secedes."""
    if depth == 0:
        return 0
    return nl.value(deep(depth - 1)) + 1


@nl.agent
def child_context() -> dict[str, Any]:
    """Make a nested call and report both contexts."""
    mine = nl.current_call()
    assert mine is not None
    inner = whoami()
    return {"outer": mine.to_dict(), "inner": nl.value(inner)}


@nl.agent
async def async_child_context() -> dict[str, Any]:
    mine = nl.current_call()
    assert mine is not None
    inner = await whoami()
    return {"outer": mine.to_dict(), "inner": inner}


@nl.agent
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, by: int = 1) -> int:
        self.n += by
        return self.n

    async def aget(self) -> int:
        await asyncio.sleep(0)
        return self.n

    def where(self) -> int:
        return os.getpid()


@nl.agent(resources={"GPU": 1})
def needs_gpu() -> str:
    return "ran"


@nl.agent(resources={"SLOT": 1})
def needs_slot() -> str:
    return "ran"


def workflow(question: str) -> Any:
    """Plain workflow code that runs with and without a Runtime."""
    words = [w for w in question.split()]
    lengths = [add(len(w), 0) for w in words]
    longest = max(lengths)
    ok = longest > 3
    return {"n": len(lengths), "total": total(lengths) + 0, "longest": int(longest), "ok": bool(ok),
            "first": str(add(1, 1))}


class Replica:
    """A stand-in endpoint for deployed components."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ask(self, x: Any, seconds: float = 0.0) -> str:
        time.sleep(seconds)
        return f"{self.name}:{x}"


class Box:
    """A value that can be weakly referenced (to see who keeps a result alive)."""

    def __init__(self, n: int) -> None:
        self.n = n


@nl.agent(idempotent=True)
def make_box(n: int) -> Box:
    return Box(n)


@nl.agent(min_instances=2, max_instances=2, max_concurrency=1, idempotent=True)
def pair_sleep(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


class Refused(Exception):
    """An exception whose constructor takes other arguments than its message."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@nl.tool(idempotent=True)
def refuse(code: int) -> None:
    raise Refused(code, "not today")


@nl.tool(idempotent=True)
def echo(x: Any) -> Any:
    return x


@nl.agent(max_concurrency=1)
def one_at_a_time(path: str, seconds: float) -> str:
    time.sleep(seconds)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("ran\n")
    return "done"


@nl.tool
async def long_wait(flag: str, seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        with open(flag, "w", encoding="utf-8") as fh:
            fh.write("cancelled")
        raise
    return "slept"
