"""Links between a driver and the executors of its workers.

Every Dask worker of a Runtime runs a :class:`~nalar_plugin.execution.WorkerExecutor`,
installed by :class:`ExecutorPlugin` (a Dask ``WorkerPlugin``, so workers that
join later, or restart, get one too). The driver reaches it by one of two links:

* :class:`InProcessLink` — the worker lives in the driver's process (the
  embedded threads cluster): jobs are handed over as they are, by reference,
  with no serialisation at all.
* :class:`RemoteLink` — any other worker: one duplex stream per worker over
  Dask's own comms (``tcp://``, ``tls://`` with the cluster's security), opened
  by the driver. Messages are batched both ways; payloads are pickled
  (cloudpickle for what plain pickle cannot take). On the worker,
  :class:`DriverLink` serves the stream.

The stream carries jobs and their outcomes, and the requests a running body
makes of its driver: nested calls (they go through the driver's controllers
and journal like every call), managed-state reads, and callback events of
adapter calls. The Dask scheduler is not on the path of a call: it keeps the
workers, their resources and their lifecycle. A link that breaks fails its
jobs with :class:`~nalar_plugin.errors.WorkerLostError`, and the call path
retries them under the journal.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any, Final

import cloudpickle
from distributed.comm import connect
from distributed.diagnostics.plugin import WorkerPlugin

from .context import CallContext, current_call, make_context
from .errors import ClusterError, SerializationError, WorkerLostError
from .execution import ERROR, LOST, OK, Job, Outcome, WorkerExecutor, pack_error, unpack_error
from .future import FINISHED, Future, collect_futures
from .state.serde import default_serde
from .state.service import parse_allowed_types
from .stubs import HostedObject

__all__ = [
    "HANDLER",
    "PLUGIN_NAME",
    "DriverLink",
    "ExecutorPlugin",
    "FutureRef",
    "InProcessLink",
    "RemoteLink",
    "dumps",
    "loads",
]

logger = logging.getLogger(__name__)

PLUGIN_NAME: Final = "nalar-executor"
HANDLER: Final = "nalar_link"


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; what plain pickle cannot take (``__main__``, closures) goes by value."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    """Undo :func:`dumps`."""
    return pickle.loads(data)


class FutureRef:
    """A future passed from a worker process to its driver: the driver's future of that call."""

    __slots__ = ("call_id",)

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id


# -- the worker side ------------------------------------------------------------------
class ExecutorPlugin(WorkerPlugin):
    """Installs a :class:`WorkerExecutor` and the link handler on every worker.

    Args:
        slots: ``nalar.worker-slots``.
        max_threads: ``nalar.worker-threads-max``.
        idle_s: ``nalar.worker-thread-idle``.
    """

    name = PLUGIN_NAME
    idempotent = True  # a second driver of the cluster keeps the running executor

    def __init__(self, slots: int = 64, max_threads: int = 512, idle_s: float = 10.0) -> None:
        self.slots = slots
        self.max_threads = max_threads
        self.idle_s = idle_s
        self.executor: WorkerExecutor | None = None

    def setup(self, worker: Any) -> None:
        self.executor = WorkerExecutor(worker.address, slots=self.slots, max_threads=self.max_threads, worker=worker,
                                       idle_s=self.idle_s)
        worker.handlers[HANDLER] = self._serve

    def teardown(self, worker: Any) -> None:
        worker.handlers.pop(HANDLER, None)
        if self.executor is not None:
            self.executor.close()

    async def _serve(self, comm: Any, token: str = "", allowed_types: Any = ()) -> None:
        assert self.executor is not None
        link = DriverLink(comm, token, self.executor, allowed_types)
        await link.serve()


class _Pending:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Stream:
    """Batched writes of messages to one comm, from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.comm: Any = None
        self._out: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._armed = False
        self.closed = False

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            if self.closed:
                return
            self._out.append(msg)
            if self._armed:
                return
            self._armed = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._wake.set()
        else:
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed
                pass

    async def write_forever(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                msgs, self._out = self._out, []
                self._armed = False
            if msgs and self.comm is not None:
                await self.comm.write(msgs)


class DriverLink:
    """The worker's end of one driver's stream: runs its jobs, carries the bodies' requests.

    It is the sink of nested calls made by bodies it runs, and their
    managed-state access.
    """

    def __init__(self, comm: Any, token: str, executor: WorkerExecutor, allowed_types: Any) -> None:
        self.token = token
        self.executor = executor
        self.serde = default_serde(allowed_types=parse_allowed_types(list(allowed_types or [])))
        self._stream = _Stream(asyncio.get_running_loop())
        self._stream.comm = comm
        self._pending: dict[int, _Pending] = {}
        self._nested: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._rid = itertools.count()

    async def serve(self) -> None:
        """Read the driver's messages until the stream closes."""
        comm = self._stream.comm
        writer = asyncio.ensure_future(self._stream.write_forever())
        try:
            while True:
                msgs = await comm.read()
                for msg in msgs:
                    self._handle(msg)
        except Exception as exc:  # the driver left or the comm broke
            logger.debug("link to driver %s closed: %s", self.token, exc)
        finally:
            self._stream.closed = True
            writer.cancel()
            self._fail_waiters(WorkerLostError(f"the link to the driver of Runtime {self.token} closed"))

    def _fail_waiters(self, exc: BaseException) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            nested, self._nested = self._nested, {}
        for p in pending.values():
            p.error = exc
            p.event.set()
        for fut in nested.values():
            fut._finish("error", exception=exc)

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "run":
            self._run(msg["id"], msg["job"])
        elif op == "cancel":
            self.executor.cancel(msg["id"])
        elif op == "reply":
            with self._lock:
                pending = self._pending.pop(msg["rid"], None)
            if pending is not None:
                error = msg.get("error")
                pending.value = msg.get("data")
                pending.error = unpack_error(error) if error is not None else None
                pending.event.set()
        elif op == "result":
            with self._lock:
                fut = self._nested.pop(msg["id"], None)
            if fut is not None:
                if msg["kind"] == OK:
                    fut._finish(FINISHED, value=loads(msg["value"]))
                else:
                    fut._finish(msg.get("state", "error"), exception=unpack_error(msg["error"]))
        elif op == "drop":
            self.executor.drop_objects(list(msg["objects"]))

    def _run(self, call_id: str, payload: bytes) -> None:
        def reply(outcome: Outcome) -> None:
            self._stream.send(_outcome_message(call_id, outcome))

        try:
            job: Job = loads(payload)
        except Exception as exc:
            reply(Outcome(ERROR, SerializationError(
                f"call {call_id} could not be loaded on worker {self.executor.address}: {exc}. The worker's "
                "environment must be able to import what the call needs (the same packages as the driver)")))
            return
        self.executor.run(job, reply, sink=self, access=lambda: self)

    # -- requests of running bodies ---------------------------------------------
    def _request(self, msg: dict[str, Any], timeout: float | None = None) -> Any:
        rid = next(self._rid)
        pending = _Pending()
        with self._lock:
            self._pending[rid] = pending
        self._stream.send({**msg, "rid": rid})
        if not pending.event.wait(timeout):
            raise ClusterError(f"the driver of Runtime {self.token} did not answer within {timeout} s")
        if pending.error is not None:
            raise pending.error
        return pending.value

    def read(self, session: str, name: str) -> bytes | None:
        """A managed container's committed record, from the driver's store."""
        data = self._request({"op": "read", "session": session, "name": name})
        return None if data is None else bytes(data)

    def emit(self, channel: str, event: bytes) -> None:
        """Send a callback event of an adapter call to the caller's channel."""
        self._stream.send({"op": "event", "channel": channel, "event": event})

    def submit_call(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Make a nested call: it goes to the driver, whose controllers and journal serve it."""
        deps = collect_futures(args, [])
        collect_futures(kwargs, deps)
        deps.extend(options.pop("after", None) or [])
        ctx = make_context(stub.name, stub.method, deps, options, None)
        fut = Future(ctx)
        with self._lock:
            self._nested[ctx.call_id] = fut
        try:
            payload = dumps((stub, _refs(args), _refs(kwargs), options, ctx, [d.call_id for d in deps]))
        except Exception as exc:
            with self._lock:
                self._nested.pop(ctx.call_id, None)
            fut._finish("error", exception=SerializationError(
                f"a nested call of {stub.name} cannot be sent to the driver: {exc}"))
            return fut
        self._stream.send({"op": "call", "id": ctx.call_id, "payload": payload})
        return fut

    def host_object(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Host an object of a class stub, from inside a body (the driver picks its worker)."""
        object_id, worker, created = self._request(
            {"op": "host", "payload": dumps((stub, _refs(args), _refs(kwargs)))})
        done: Future = Future(current_call() or _anonymous())
        done._finish(FINISHED, value=created)
        return HostedObject(self, stub, object_id, worker, done)


def _anonymous() -> CallContext:
    return CallContext(session="", call_id="", component="")


def _refs(obj: Any) -> Any:
    """Replace futures in ``obj`` by their value (done) or a :class:`FutureRef` (not yet)."""
    if isinstance(obj, Future):
        if obj.status == FINISHED:
            return obj.value()
        return FutureRef(obj.call_id)
    if type(obj) in (list, tuple, set, frozenset):
        return type(obj)(_refs(x) for x in obj)
    if type(obj) is dict:
        return {k: _refs(v) for k, v in obj.items()}
    return obj


def _outcome_message(call_id: str, outcome: Outcome) -> dict[str, Any]:
    if outcome.kind == OK:
        try:
            return {"op": "outcome", "id": call_id, "kind": OK, "value": dumps(outcome.value), "ops": outcome.ops}
        except Exception as exc:
            err: BaseException = SerializationError(
                f"the result of call {call_id} ({type(outcome.value).__name__}) cannot be sent back to the "
                f"driver: {exc}")
            return {"op": "outcome", "id": call_id, "kind": ERROR, "error": pack_error(err)}
    return {"op": "outcome", "id": call_id, "kind": outcome.kind, "error": pack_error(outcome.value)}


# -- the driver side --------------------------------------------------------------------
Done = Callable[[Outcome], None]


class LinkHandlers:
    """What a driver does with the requests its workers' bodies make (supplied by the call path)."""

    def read(self, session: str, name: str, reply: Callable[[Any, BaseException | None], None]) -> None:
        raise NotImplementedError

    def nested(self, link: RemoteLink, call_id: str, payload: bytes) -> None:
        raise NotImplementedError

    def host(self, payload: bytes, reply: Callable[[Any, BaseException | None], None]) -> None:
        raise NotImplementedError

    def event(self, channel: str, event: bytes) -> None:
        raise NotImplementedError


class InProcessLink:
    """The link to an executor in this process: jobs go by reference.

    Args:
        executor: The worker's executor.
        sink: Where nested calls made by its bodies go (the Runtime).
        access: The managed-state access of its bodies (the journal).
    """

    remote = False

    def __init__(self, executor: WorkerExecutor, sink: Any, access: Callable[[], Any]) -> None:
        self.executor = executor
        self.address = executor.address
        self._sink = sink
        self._access = access
        self.in_flight = 0
        self.alive = True

    def send(self, job: Job, done: Done) -> None:
        self.executor.run(job, done, sink=self._sink, access=self._access)

    def cancel(self, call_id: str) -> bool:
        return self.executor.cancel(call_id)

    def drop_objects(self, object_ids: list[str]) -> None:
        self.executor.drop_objects(object_ids)

    def close(self) -> None:
        self.alive = False


class RemoteLink:
    """The driver's end of the stream to one worker process (see the module docstring).

    Args:
        address: The worker's address.
        loop: The driver's Dask client loop (the stream's reads and writes run there).
        connection_args: The client's connection arguments (security).
        token: The Runtime's token.
        allowed_types: The state serde's extra classes.
        handlers: What to do with the bodies' requests.
        on_close: Called once when the stream closes.
    """

    remote = True

    def __init__(self, address: str, loop: asyncio.AbstractEventLoop, connection_args: dict[str, Any], token: str,
                 allowed_types: list[str], handlers: LinkHandlers, on_close: Callable[[RemoteLink], None]) -> None:
        self.address = address
        self._loop = loop
        self._connection_args = connection_args
        self._token = token
        self._allowed_types = allowed_types
        self._handlers = handlers
        self._on_close = on_close
        self._stream = _Stream(loop)
        self._jobs: dict[str, Done] = {}
        self._lock = threading.Lock()
        self.in_flight = 0
        self.alive = True
        self.ready = threading.Event()
        asyncio.run_coroutine_threadsafe(self._run(), loop)

    async def _run(self) -> None:
        writer = None
        try:
            comm = await connect(self.address, **self._connection_args)
            await comm.write({"op": HANDLER, "token": self._token, "allowed_types": self._allowed_types,
                              "reply": False})
            self._stream.comm = comm
            self.ready.set()
            writer = asyncio.ensure_future(self._stream.write_forever())
            self._stream._wake.set()  # messages queued before the stream was open
            while True:
                msgs = await comm.read()
                for msg in msgs:
                    self._handle(msg)
        except Exception as exc:  # the worker died or could not be reached
            logger.debug("link to worker %s closed: %s", self.address, exc)
        finally:
            if writer is not None:
                writer.cancel()
            self._close(WorkerLostError(f"lost the link to worker {self.address} (the worker died or left)"))

    def _close(self, exc: BaseException) -> None:
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            self._stream.closed = True
            jobs, self._jobs = self._jobs, {}
        self.ready.set()
        comm = self._stream.comm
        if comm is not None and not comm.closed():
            comm.abort()
        for done in jobs.values():
            done(Outcome(LOST, exc))
        self._on_close(self)

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "outcome":
            with self._lock:
                done = self._jobs.pop(msg["id"], None)
            if done is None:
                return
            if msg["kind"] == OK:
                try:
                    value = loads(msg["value"])
                except Exception as exc:
                    done(Outcome(ERROR, SerializationError(
                        f"the result of call {msg['id']} cannot be loaded in the driver: {exc}")))
                    return
                done(Outcome(OK, value, msg.get("ops")))
            else:
                done(Outcome(msg["kind"], unpack_error(msg["error"])))
        elif op == "read":
            rid = msg["rid"]
            self._handlers.read(msg["session"], msg["name"], lambda data, err: self._reply(rid, data, err))
        elif op == "call":
            self._handlers.nested(self, msg["id"], msg["payload"])
        elif op == "host":
            rid = msg["rid"]
            self._handlers.host(msg["payload"], lambda data, err: self._reply(rid, data, err))
        elif op == "event":
            self._handlers.event(msg["channel"], msg["event"])

    def _reply(self, rid: int, data: Any, error: BaseException | None) -> None:
        msg: dict[str, Any] = {"op": "reply", "rid": rid, "data": data}
        if error is not None:
            msg["error"] = pack_error(error)
        self._stream.send(msg)

    def send(self, job: Job, done: Done) -> None:
        """Send a job; ``done(outcome)`` runs on the client loop when it comes back."""
        call_id = job.ctx.call_id
        try:
            payload = dumps(job)
        except Exception as exc:
            done(Outcome(ERROR, SerializationError(
                f"call {call_id} of {job.ctx.component}.{job.ctx.method} cannot be sent to worker "
                f"{self.address}: {exc}")))
            return
        with self._lock:
            if not self.alive:
                lost = True
            else:
                lost = False
                self._jobs[call_id] = done
        if lost:
            done(Outcome(LOST, WorkerLostError(f"the link to worker {self.address} is closed")))
            return
        self._stream.send({"op": "run", "id": call_id, "job": payload})

    def send_result(self, call_id: str, fut: Future) -> None:
        """Send the outcome of a nested call back to the worker that made it."""
        if fut.status == FINISHED:
            try:
                msg = {"op": "result", "id": call_id, "kind": OK, "value": dumps(fut.value())}
            except Exception as exc:
                err = SerializationError(f"the result of nested call {call_id} cannot be sent to its worker: {exc}")
                msg = {"op": "result", "id": call_id, "kind": ERROR, "error": pack_error(err)}
        else:
            msg = {"op": "result", "id": call_id, "kind": ERROR, "state": fut.status,
                   "error": pack_error(fut.exception() or RuntimeError(f"call ended as {fut.status}"))}
        self._stream.send(msg)

    def cancel(self, call_id: str) -> bool:
        self._stream.send({"op": "cancel", "id": call_id})
        return True

    def drop_objects(self, object_ids: list[str]) -> None:
        self._stream.send({"op": "drop", "objects": list(object_ids)})

    def close(self) -> None:
        """Close the stream (the worker stays)."""
        self._loop.call_soon_threadsafe(self._close, WorkerLostError(f"the link to worker {self.address} closed"))
