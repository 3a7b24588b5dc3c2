"""Making an adapter call: options from the run, the payload, the wait.

The seams (:mod:`._seams`) hand an intercepted tool or chat-model call here.
:class:`AdapterCall` reads the run (session = thread id, priority, deadline,
LangGraph node and step), derives the call's dependencies and idempotency key,
packs the job (:mod:`._parcel`), submits it through ``rt.submit_call`` (so the
controllers schedule it and every ``nalar_call_*`` hook fires), then waits for
its future while it replays the worker's callback events in the caller.

A job that cannot be sent to a worker process runs in the caller's process under
the same scheduling: a *gate* task holds a slot of the call's instance while the
caller runs the body, and an :class:`~._parcel.InProcessWarning` names the
object that did not travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config

from ..context import new_id
from ..future import Future, _in_task_thread
from ..stubs import Directives, Stub
from . import _jobs
from ._parcel import (
    InProcessWarning,
    NotSendable,
    Ref,
    check_sendable,
    release,
    sendable,
    shares_process,
)
from ._runtree import Recorder, RunInfo
from ._switch import Switch, runtime_of
from ._tunnel import DONE, Channel, areplay, open_channel, replay, streaming_flags

__all__ = ["GATES", "AdapterCall", "run_info"]

_CONF = "configurable"
_RUNTIME_KEY = "__pregel_runtime"

# Gate name -> what to call when the gate's call is admitted (see the plugin in _seams).
GATES: dict[str, Callable[[str], None]] = {}
_GATES_LOCK = threading.Lock()


def _lookup(metadata: dict[str, Any], configurable: dict[str, Any], key: str) -> Any:
    value = metadata.get(key)
    return configurable.get(key) if value is None else value


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def run_info(switch: Switch, run_manager: Any) -> RunInfo:
    """Read a run's nalar context from its metadata and the ambient config.

    ``nalar_session``, ``nalar_priority``, ``nalar_deadline`` and
    ``nalar_expected_s`` may be set in ``config["metadata"]`` or
    ``config["configurable"]``; the session defaults to LangGraph's ``thread_id``.
    """
    metadata = dict(getattr(run_manager, "metadata", None) or {})
    config: dict[str, Any] = dict(var_child_runnable_config.get() or {})
    configurable = dict(config.get(_CONF) or {})
    session = _lookup(metadata, configurable, "nalar_session") or switch.session or _lookup(metadata, configurable, "thread_id")
    priority = _number(_lookup(metadata, configurable, "nalar_priority"))
    deadline = _number(_lookup(metadata, configurable, "nalar_deadline"))
    expected = _number(_lookup(metadata, configurable, "nalar_expected_s"))
    step = metadata.get("langgraph_step")
    return RunInfo(
        run_id=getattr(run_manager, "run_id", None),
        session=str(session) if session else None,
        priority=switch.priority if priority is None else priority,
        deadline=switch.deadline if deadline is None else deadline,
        expected_s=_number(switch.options.get("expected_s")) if expected is None else expected,
        node=metadata.get("langgraph_node"),
        step=step if isinstance(step, int) else None,
        task_ns=str(metadata.get("langgraph_checkpoint_ns") or ""),
        metadata=metadata,
    )


def _picklable(value: Any) -> bool:
    try:
        check_sendable(value, "")
    except NotSendable:
        return False
    return True


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if _picklable(v)}


def _clean_config(config: dict[str, Any], channel: str) -> dict[str, Any]:
    """A config that pickles: LangGraph's in-process machinery stays behind."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "callbacks":
            continue
        if key == "metadata":
            out[key] = _clean_meta(dict(value or {}))
        elif key == _CONF:
            conf = {k: v for k, v in (value or {}).items() if not str(k).startswith("__") and _picklable(v)}
            runtime = (value or {}).get(_RUNTIME_KEY)
            if runtime is not None and dataclasses.is_dataclass(runtime):
                store = getattr(runtime, "store", None)
                try:
                    sent = sendable(store, "the graph's store") if store is not None else None
                except NotSendable as exc:
                    # Only a body that reaches for it (get_store()) needs it; one that
                    # declares it runs in the caller's process instead (see tool_job).
                    sent = _jobs.StaysInCaller("the graph's store", exc.reason)
                moved = dataclasses.replace(
                    runtime, stream_writer=_jobs.TunnelWriter(channel), store=sent,  # type: ignore[type-var]
                )
                if _picklable(moved):
                    conf[_RUNTIME_KEY] = moved
            out[key] = conf
        elif _picklable(value):
            out[key] = value
    return out


def _plan_config(config: dict[str, Any] | None, by_value: bool, channel: str) -> _jobs.ConfigPlan:
    config = dict(config or {})
    spec = _jobs.CallbacksSpec.of(config.get("callbacks"), _clean_meta if by_value else dict)
    rest = _clean_config(config, channel) if by_value else {k: v for k, v in config.items() if k != "callbacks"}
    return _jobs.ConfigPlan(rest, spec, by_value, channel)


def _stream_writer(config: dict[str, Any] | None, kwargs: dict[str, Any]) -> Callable[[Any], None] | None:
    """The caller's LangGraph stream writer, for writes tunnelled from a worker process."""
    for value in kwargs.values():
        writer = getattr(value, "stream_writer", None)
        if writer is not None and hasattr(value, "tool_call_id"):
            return writer  # type: ignore[no-any-return]
    runtime = ((config or {}).get(_CONF) or {}).get(_RUNTIME_KEY)
    return getattr(runtime, "stream_writer", None)


class AdapterCall:
    """One intercepted call, from its run to its result.

    Args:
        switch: The run's switch.
        kind: ``"tool"`` or ``"model"``.
        component: Component name (tool name, model name or deployed component).
        run_manager: The caller's run manager of the tool or model run.
        is_async: Whether the caller awaits (async path).
    """

    def __init__(self, switch: Switch, kind: str, component: str, run_manager: Any, is_async: bool) -> None:
        self.switch = switch
        self.kind = kind
        self.component = component
        self.run_manager = run_manager
        self.is_async = is_async
        self.rt = runtime_of(switch)
        self.state: Any = getattr(self.rt, "_nalar_adapters", None)
        self.recorder: Recorder | None = getattr(self.state, "recorder", None)
        self.info = run_info(switch, run_manager)
        self.session = self.info.session
        if self.session is None and self.recorder is not None:
            self.session = self.recorder.root_session(self.info.run_id)
        self.by_ref = shares_process(self.rt)
        self.loop = asyncio.get_running_loop() if is_async else None
        self.channel: Channel = open_channel(getattr(self.rt, "client", None) or _worker_client(), self.loop)
        self.ref: Ref | None = None
        self.writer: Callable[[Any], None] | None = None

    # -- deciding --------------------------------------------------------------
    def routed(self) -> bool:
        """Ask the ``nalar_adapter_route`` hook whether to serve this call (default yes)."""
        plugins = getattr(self.rt, "plugins", None)
        if plugins is None:
            return True
        verdict = plugins.hook.nalar_adapter_route(kind=self.kind, name=self.component, run=self.info)
        if verdict is False:
            self.channel.close()
            return False
        return True

    def options(self, deps: list[Future], key: str | None) -> dict[str, Any]:
        """Call options: session, priority, deadline, dependencies, key, extra."""
        info = self.info
        extra: dict[str, Any] = {"adapter": self.kind}
        for name in ("node", "step", "task_ns"):
            if getattr(info, name):
                extra[f"langgraph_{name}"] = getattr(info, name)
        if info.run_id is not None:
            extra["run_id"] = str(info.run_id)
        if info.expected_s is not None:
            extra["expected_s"] = info.expected_s
        opts: dict[str, Any] = {"session": self.session, "priority": info.priority, "deadline": info.deadline,
                                "idempotency_key": key, "after": deps or None, "extra": extra}
        return {k: v for k, v in opts.items() if v is not None}

    def key(self, tool_call_id: str | None = None) -> str | None:
        """A deterministic idempotency key: a resumed run maps to the same journal entry."""
        if self.session is None:
            return None
        if tool_call_id:
            return f"{self.session}/{tool_call_id}"
        scope = f"{self.session}/{self.info.task_ns}/{self.component}"
        # Counted per parent run: a task that LangGraph runs again after a resume
        # is a new parent run, and its calls derive the same keys again.
        parent = getattr(self.run_manager, "parent_run_id", None)
        seq = self.recorder.next_seq(f"{scope}@{parent}") if self.recorder is not None else 0
        return f"{scope}/{seq}"

    def stub(self, fn: Callable[..., Any], method: str, **forced: Any) -> Stub:
        """The stub of this call's component (directives from ``callback(directives=...)``).

        Tool calls are journaled: a resumed run gets a finished tool's result
        from the journal instead of running its effects again. Model calls have
        no effects to protect, so they are not, unless their directives say
        ``idempotent=False``.
        """
        given = (self.switch.options.get("directives") or {}).get(self.component) or {}
        kind = "tool" if self.kind == "tool" else "agent"
        defaults = {"idempotent": True} if self.kind == "model" else {}
        directives = Directives(kind=kind, **{**defaults, **given, **forced})
        directives.validate(self.component)
        return Stub(fn, self.component, directives, method)

    def run_spec(self, by_value: bool) -> _jobs.RunSpec:
        """The caller's run, as the worker rebuilds it."""
        rm = self.run_manager
        handlers = list(rm.handlers) + list(rm.inheritable_handlers)
        v1, v2 = streaming_flags(handlers)
        clean = _clean_meta if by_value else dict
        return _jobs.RunSpec(
            run_id=rm.run_id, parent_run_id=rm.parent_run_id, tags=list(rm.tags),
            inheritable_tags=list(rm.inheritable_tags), metadata=clean(dict(rm.metadata)),
            inheritable_metadata=clean(dict(rm.inheritable_metadata)), channel=self.channel.id,
            stream_v1=v1, stream_v2=v2, switch=self.switch,
        )

    # -- payloads ------------------------------------------------------------------
    def tool_job(self, tool: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 wants_run_manager: bool, config_param: str | None) -> Any:
        """Pack a tool job; raises :class:`NotSendable` when it cannot travel."""
        from langgraph.prebuilt import ToolRuntime

        by_value = not self.by_ref
        ambient = var_child_runnable_config.get()
        self.writer = _stream_writer(ambient, kwargs)  # type: ignore[arg-type]
        name = f"tool {self.component!r}"
        packed: dict[str, Any] = {}
        for k, v in kwargs.items():
            if k == "run_manager":
                continue
            if isinstance(v, ToolRuntime):
                packed[k] = self._tool_runtime(v, by_value)
            elif k == config_param and isinstance(v, dict):
                packed[k] = _plan_config(v, by_value, self.channel.id)
            else:
                packed[k] = check_sendable(v, f"argument {k!r} of {name}") if by_value else v
        job = _jobs.ToolJob(
            tool=sendable(tool, name) if by_value else tool, method=method,
            args=tuple(check_sendable(a, f"an argument of {name}") for a in args) if by_value else args,
            kwargs=packed, run=self.run_spec(by_value), wants_run_manager=wants_run_manager,
            ambient=_plan_config(ambient, by_value, self.channel.id),  # type: ignore[arg-type]
            context=None if by_value else contextvars.copy_context(),
        )
        return self._payload(job)

    def _tool_runtime(self, runtime: Any, by_value: bool) -> Any:
        plan = _plan_config(runtime.config, by_value, self.channel.id)
        if not by_value:
            return _jobs.RuntimePlan(runtime, plan, tunnel_writer=False)
        moved = dataclasses.replace(
            runtime, config={}, stream_writer=None,
            store=sendable(runtime.store, "the graph's store") if runtime.store is not None else None,
            tools=[sendable(t, f"tool {getattr(t, 'name', t)!r}") for t in runtime.tools],
        )
        check_sendable(moved, f"the ToolRuntime of tool {self.component!r}")
        return _jobs.RuntimePlan(moved, plan, tunnel_writer=True)

    def model_job(self, model: Any, messages: list[Any], stop: list[str] | None, kwargs: dict[str, Any], deployed: bool) -> Any:
        """Pack a model job; raises :class:`NotSendable` when it cannot travel."""
        by_value = not self.by_ref
        name = f"chat model {self.component!r}"
        job = _jobs.ModelJob(
            model=None if deployed else (sendable(model, name) if by_value else model),
            messages=check_sendable(messages, f"the messages of {name}") if by_value else messages,
            stop=stop,
            kwargs={k: check_sendable(v, f"argument {k!r} of {name}") for k, v in kwargs.items()} if by_value else kwargs,
            run=self.run_spec(by_value), context=None if by_value else contextvars.copy_context(),
        )
        return self._payload(job)

    def _payload(self, job: Any) -> Any:
        if self.by_ref:
            self.ref = Ref(job)
            return self.ref
        return job

    # -- running -------------------------------------------------------------------
    def submit(self, stub: Stub, payload: Any, options: dict[str, Any], component_method: str | None = None) -> Future:
        """Make the call; ``component_method`` calls a deployed component instead."""
        if component_method is not None:
            fut: Future = self.rt.call_with(self.component, component_method, (payload,), {}, **options)
        else:
            fut = self.rt.submit_call(stub, (payload,), {}, **options)
        if self.recorder is not None:
            self.recorder.attach(self.info.run_id, fut.call_id)
        return fut

    def _dispatch_event(self, item: Any) -> None:
        if item[0] == _jobs.STREAM_WRITE:
            if self.writer is not None:
                self.writer(item[1][0])
            return
        replay(self.run_manager, item)

    async def _adispatch_event(self, item: Any) -> None:
        if item[0] == _jobs.STREAM_WRITE:
            if self.writer is not None:
                self.writer(item[1][0])
            return
        await areplay(self.run_manager, item)

    def wait(self, fut: Future) -> Any:
        """Replay the call's events as they arrive, then return its value (thread callers)."""
        fut.add_done_callback(lambda _: self.channel.put(DONE))
        seceded = _in_task_thread()
        if seceded:
            # Waiting inside a running call gives its worker slot back.
            from distributed import secede

            secede()
        try:
            while (item := self.channel.get()) is not DONE:
                self._dispatch_event(item)
        finally:
            self.done()
            if seceded:
                from distributed import rejoin

                rejoin()
        return fut.result()

    async def await_(self, fut: Future) -> Any:
        """Replay the call's events as they arrive, then return its value (async callers)."""
        fut.add_done_callback(lambda _: self.channel.put(DONE))
        try:
            while (item := await self.channel.aget()) is not DONE:
                await self._adispatch_event(item)
        finally:
            self.done()
        return await fut

    def done(self) -> None:
        """Close the channel and drop the by-reference payload."""
        self.channel.close()
        release(self.ref)
        self.ref = None

    # -- in process ------------------------------------------------------------------
    def _gate(self, options: dict[str, Any], on_admit: Callable[[str], None]) -> tuple[str, Future]:
        name = new_id("gate")
        options = {**options, "extra": {**options.get("extra", {}), "nalar_gate": name}}
        with _GATES_LOCK:
            GATES[name] = on_admit
        # A gate only holds a slot: replaying it from the journal would hold none.
        stub = self.stub(_jobs.gate, "gate", idempotent=True)
        return name, self.rt.submit_call(stub, (name,), {}, **options)

    def _warn(self, exc: NotSendable) -> None:
        warnings.warn(
            f"{exc.what} cannot be sent to a Dask worker process ({exc.reason}); it runs in this "
            "process under the same scheduling. Make it picklable (module-level functions, clients "
            "created inside the tool) to run it on the cluster.",
            InProcessWarning,
            stacklevel=4,
        )

    @staticmethod
    def _forget_gate(name: str) -> None:
        with _GATES_LOCK:
            GATES.pop(name, None)

    def _open_gate(self, name: str, outcome: str) -> None:
        from distributed import Variable

        self._forget_gate(name)
        Variable(name, client=self.rt.client).set(outcome)

    @contextlib.contextmanager
    def admitted(self, exc: NotSendable, options: dict[str, Any]) -> Iterator[None]:
        """Hold an admitted slot of the call's instance while the body runs here (thread callers)."""
        self.done()
        if getattr(self.rt, "plugins", None) is None:  # a worker process: it is already on the cluster
            yield
            return
        self._warn(exc)
        admitted = threading.Event()
        name, fut = self._gate(options, lambda _: admitted.set())
        fut.add_done_callback(lambda _: admitted.set())  # refused before admission
        admitted.wait()
        if fut.done():
            self._forget_gate(name)
            fut.result()  # raises the refusal
        outcome = ""
        try:
            yield
        except BaseException as err:
            outcome = f"{type(err).__name__}: {err}"
            raise
        finally:
            self._open_gate(name, outcome)
            fut.exception()  # the slot is free and the call's status final when this returns

    @contextlib.asynccontextmanager
    async def aadmitted(self, exc: NotSendable, options: dict[str, Any]) -> AsyncIterator[None]:
        """Hold an admitted slot of the call's instance while the body runs here (async callers)."""
        self.done()
        if getattr(self.rt, "plugins", None) is None:
            yield
            return
        self._warn(exc)
        loop = asyncio.get_running_loop()
        admitted = asyncio.Event()

        def wake(_: Any) -> None:
            loop.call_soon_threadsafe(admitted.set)

        name, fut = self._gate(options, wake)
        fut.add_done_callback(wake)
        await admitted.wait()
        if fut.done():
            self._forget_gate(name)
            await fut
        outcome = ""
        try:
            yield
        except BaseException as err:
            outcome = f"{type(err).__name__}: {err}"
            raise
        finally:
            await loop.run_in_executor(None, self._open_gate, name, outcome)
            with contextlib.suppress(Exception):  # the body's own error is what the caller sees
                await fut

    def in_process(self, exc: NotSendable, options: dict[str, Any], body: Callable[[], Any]) -> Any:
        """Run ``body`` here once the controllers admit the call (thread callers)."""
        with self.admitted(exc, options):
            return body()

    async def ain_process(self, exc: NotSendable, options: dict[str, Any], body: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``body`` here once the controllers admit the call (async callers)."""
        async with self.aadmitted(exc, options):
            return await body()


def _worker_client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except ValueError:
        return None
