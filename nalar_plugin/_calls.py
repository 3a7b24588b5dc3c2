"""Making calls: context, dependencies, the graph. Shared by the driver and workers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .context import CallContext, _call_var, _options_var, _session_var, new_id
from .future import ERROR, FINISHED, QUEUED, Future
from .graph import SessionGraph
from .scheduler.controller import Call

__all__ = ["CallMaker", "collect_futures", "replace_futures"]

logger = logging.getLogger(__name__)


def collect_futures(obj: Any, out: list[Future]) -> list[Future]:
    """Append every :class:`Future` inside ``obj`` (lists, tuples, sets, dicts) to ``out``."""
    if isinstance(obj, Future):
        out.append(obj)
    elif type(obj) in (list, tuple, set, frozenset):
        for x in obj:
            collect_futures(x, out)
    elif type(obj) is dict:
        for x in obj.values():
            collect_futures(x, out)
    return out


def replace_futures(obj: Any, fn: Callable[[Future], Any]) -> Any:
    """Return ``obj`` with every :class:`Future` inside replaced by ``fn(future)``."""
    if isinstance(obj, Future):
        return fn(obj)
    if type(obj) in (list, tuple, set, frozenset):
        return type(obj)(replace_futures(x, fn) for x in obj)
    if type(obj) is dict:
        return {k: replace_futures(v, fn) for k, v in obj.items()}
    return obj


class _Node:
    __slots__ = ("context", "status", "started", "finished")

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self.status = "pending"
        self.started = time.time()
        self.finished: float | None = None


class CallMaker:
    """Builds calls with their context and keeps each session's dependency graph."""

    def __init__(self) -> None:
        self._graph_lock = threading.Lock()
        self._graphs: dict[str, dict[str, _Node]] = {}
        self._sequence: dict[str, int] = {}  # per-(session, parent) call counter

    # -- context -------------------------------------------------------------
    def make_context(self, component: str, method: str, deps: list[Future], options: dict[str, Any]) -> CallContext:
        parent = _call_var.get()
        defaults = _options_var.get() or {}
        # A top-level call that consumes futures joins their session, so a
        # workflow written as plain calls stays one session.
        session = (
            options.get("session")
            or _session_var.get()
            or (parent.session if parent else None)
            or (deps[0].context.session if deps else None)
            or new_id("s")
        )
        priority = options.get("priority", defaults.get("priority"))
        if priority is None:
            priority = parent.priority if parent is not None else 0.0
        deadline = options.get("deadline", defaults.get("deadline"))
        if deadline is None and parent is not None:
            deadline = parent.deadline
        key = options.get("idempotency_key")
        if key is None:
            # Deterministic: the same workflow making the same calls in the same
            # order (a replay, a resumed run) derives the same keys.
            # A nested call counts on the running parent's own context, which is a
            # fresh copy in every attempt, so a retried parent derives the same keys.
            with self._graph_lock:
                if parent is not None:
                    scope = parent.idempotency_key or parent.call_id
                    seq, parent.child_seq = parent.child_seq, parent.child_seq + 1
                else:
                    scope = f"{session}/root"
                    seq = self._sequence[scope] = self._sequence.get(scope, -1) + 1
            key = f"{scope}/{component}.{method}/{seq}"
        return CallContext(
            session=session,
            call_id=new_id("c"),
            component=component,
            method=method,
            parent=parent.call_id if parent is not None else None,
            dependencies=list(dict.fromkeys(d.call_id for d in deps)),
            creator=parent.component if parent is not None else "driver",
            priority=float(priority),
            deadline=deadline,
            idempotency_key=key,
        )

    def prepare(self, target: Any, component: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> tuple[Call, list[Future]]:
        """Make the future and its :class:`Call`; return it with its input futures."""
        deps = collect_futures(args, [])
        collect_futures(kwargs, deps)
        extra_deps = options.get("after") or []
        deps.extend(extra_deps)
        ctx = self.make_context(component, method, deps, options)
        fut = Future(ctx)
        for d in deps:
            d.context.consumers.append(ctx.call_id)
        call = Call(context=ctx, target=target, args=args, kwargs=kwargs, future=fut)
        self.record(ctx)
        fut.add_done_callback(self._mark_done)
        return call, deps

    def when_ready(self, call: Call, deps: list[Future], release: Callable[[Call], None]) -> None:
        """Release ``call`` once every input future is done (push-based, never polled)."""
        waiting = [d for d in deps if not d.done()]
        if not waiting:
            call.future._set_state(QUEUED)
            release(call)
            return
        lock = threading.Lock()
        remaining = [len(waiting)]

        def on_input(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                call.future._set_state(QUEUED)
                release(call)

        for d in waiting:
            d.add_done_callback(on_input)

    @staticmethod
    def failed_input(deps: list[Future]) -> BaseException | None:
        """Return the exception of the first input that failed, if any."""
        for d in deps:
            if d.status not in (FINISHED,) and d.done():
                return d.exception() or RuntimeError(f"input call {d.call_id} ended as {d.status}")
        return None

    # -- graph -----------------------------------------------------------------
    def record(self, ctx: CallContext) -> None:
        with self._graph_lock:
            self._graphs.setdefault(ctx.session, {})[ctx.call_id] = _Node(ctx)

    def record_remote(self, data: dict[str, Any]) -> None:
        """Record a call made on a worker in another process (from a Dask event)."""
        status = data.pop("status", "pending")
        known = CallContext.__dataclass_fields__
        ctx = CallContext(**{k: v for k, v in data.items() if k in known})
        with self._graph_lock:
            nodes = self._graphs.setdefault(ctx.session, {})
            node = nodes.get(ctx.call_id)
            if node is None:
                node = nodes[ctx.call_id] = _Node(ctx)
                for dep in ctx.dependencies:
                    if dep in nodes and ctx.call_id not in nodes[dep].context.consumers:
                        nodes[dep].context.consumers.append(ctx.call_id)
            node.status = status

    def _mark_done(self, fut: Future) -> None:
        with self._graph_lock:
            node = self._graphs.get(fut.context.session, {}).get(fut.call_id)
            if node is not None:
                node.status = fut.status
                node.finished = time.time()

    def sessions(self) -> list[str]:
        """Every session seen so far."""
        with self._graph_lock:
            return list(self._graphs)

    def graph(self, session: str) -> SessionGraph:
        """Return the dynamic dependency graph of ``session``."""
        with self._graph_lock:
            nodes = list(self._graphs.get(session, {}).values())
            data = []
            for n in nodes:
                d = n.context.to_dict()
                d["status"] = n.status if n.status != "pending" or n.finished else n.status
                d["started"] = n.started
                d["finished"] = n.finished
                data.append(d)
        return SessionGraph(session, data)


def fail(call: Call, exc: BaseException) -> None:
    """Fail a call's future before it ever ran."""
    call.future._finish(ERROR, exception=exc)
