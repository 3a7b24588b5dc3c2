"""Where a call body runs: one executor per Dask worker.

A call admitted by its local controller reaches the :class:`WorkerExecutor` of
the worker the dispatcher chose, as a :class:`Job`. The executor runs the body
with the call's context variables set (so nested calls know their session and
parent, and go to the call's sink), with a fresh managed-state scope (writes
are staged, not written), and replies with an :class:`Outcome`: the value and
the staged writes, or the exception. The driver commits both (see
:mod:`nalar_plugin.calls`).

* ``async def`` bodies run on the executor's own event loop thread, so a body
  that blocks by mistake cannot stop the Dask worker's loop, and thousands of
  calls that only await hold no thread.
* Synchronous bodies run in :class:`CallThreads`, a pool bounded by
  configuration (``nalar.worker-slots`` running bodies). A body that blocks on
  a future lends its slot while it waits (as Dask's ``secede`` does), so nested
  calls never deadlock; the pool's threads exit when idle, so an idle process
  holds none.
* Objects of class stubs and factory components live in the executor's table.

Nothing here talks to the Dask scheduler: the executor is reached in process
(threads mode) or over a link (see :mod:`nalar_plugin.links`).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import io
import logging
import pickle
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import cloudpickle
import tblib.pickling_support
from distributed import worker as dask_worker

from .context import CallContext, CallSink, enter_call, exit_call
from .errors import NalarError, WorkerLostError
from .future import set_wait_hook
from .state.managed import CallScope
from .stubs import CreateTarget, MethodTarget

__all__ = [
    "CallThreads",
    "Job",
    "Outcome",
    "RemoteError",
    "WorkerExecutor",
    "pack_error",
    "unpack_error",
]

logger = logging.getLogger(__name__)

OK: Final = "ok"
ERROR: Final = "error"
LOST: Final = "lost"


@dataclass
class Job:
    """One call as a worker runs it.

    Attributes:
        ctx: The call's context.
        target: A stub, a target above, or any callable.
        args: Positional arguments (inputs already materialised).
        kwargs: Keyword arguments.
        is_async: The body is a coroutine function.
    """

    ctx: CallContext
    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_async: bool = False


@dataclass
class Outcome:
    """What one execution of a call produced.

    Attributes:
        kind: ``"ok"``, ``"error"`` (the body raised) or ``"lost"`` (the worker
            or the link to it died; the call may be retried).
        value: The value, or the exception.
        ops: The staged managed-state writes (``ok`` only).
    """

    kind: str
    value: Any = None
    ops: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RemoteError(NalarError):
    """Stands in for an exception raised on a worker that could not travel back as itself.

    Attributes:
        type_name: The qualified name of the original exception's class.
        remote_traceback: The original traceback, formatted.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = remote_traceback


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any],
                       tb: Any, cause: Any, context: Any) -> BaseException:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    if tb is not None:
        exc = exc.with_traceback(tb)
    exc.__cause__ = cause
    exc.__context__ = context
    return exc


def _exception_reduce(exc: BaseException, depth: int = 0) -> Any:
    """Pickle an exception without calling its constructor (which may take other arguments)."""
    chained: list[Any] = [None, None]
    if depth < 8:
        for i, link in enumerate((exc.__cause__, exc.__context__)):
            if link is not None and link is not exc:
                chained[i] = _exception_reduce(link, depth + 1)
    tb = exc.__traceback__
    return (_rebuild_exception, (type(exc), tuple(exc.args), dict(getattr(exc, "__dict__", {})), tb, *chained))


class _ExceptionPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            return _exception_reduce(obj)
        return super().reducer_override(obj)


def pack_error(exc: BaseException) -> bytes:
    """Serialise an exception with its type, arguments, attributes, cause and traceback.

    An exception that cannot travel as itself travels as a :class:`RemoteError`
    that names its class and carries its message and formatted traceback.
    """
    tblib.pickling_support.install()
    try:
        buf = io.BytesIO()
        _ExceptionPickler(buf, protocol=5).dump(exc)
        data = buf.getvalue()
        back = pickle.loads(data)
        if type(back) is type(exc):
            return data
    except Exception:  # noqa: S110 - falls back to the stand-in below
        pass
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), text)
    return pickle.dumps(stand_in)


def unpack_error(data: bytes) -> BaseException:
    """Undo :func:`pack_error`."""
    tblib.pickling_support.install()
    try:
        exc = pickle.loads(data)
    except Exception as err:  # a class this process cannot import
        return RemoteError("unknown", f"an exception that cannot be loaded here ({err})")
    return exc if isinstance(exc, BaseException) else RemoteError("unknown", repr(exc))


class _Slot:
    """The wait hook of one pool thread: lends its slot while the thread blocks on a future."""

    def __init__(self, pool: CallThreads) -> None:
        self._pool = pool

    def enter(self) -> None:
        self._pool._lend()

    def exit(self) -> None:
        self._pool._take_back()


class CallThreads:
    """A thread pool for synchronous call bodies, bounded by configuration.

    A burst of short bodies is served by the threads there are; a new thread
    starts only when no thread is idle and the queue made no progress for a
    moment (its bodies block, or they run long), so short calls never pay for a
    thread each, and blocking ones still get threads quickly (one thread per
    2 ms of stall, doubling once the stall passes 20 ms). A body blocked on a future lends its slot at once.
    An idle thread waits on its own event, so a job is handed to exactly one
    sleeper; it exits after ``idle_s`` without work.

    Args:
        slots: Bodies that run at once; a body blocked on a future does not count.
        max_threads: Threads at most, waiting ones included (nested waits beyond
            this queue until a thread frees up).
        idle_s: An idle thread exits after this long.
        name: Thread name prefix.
    """

    _BASE: Final = 4  # threads started without waiting for a stall
    _STALL_S: Final = 0.002
    _LONG_STALL_S: Final = 0.02

    def __init__(self, slots: int, max_threads: int, idle_s: float = 10.0, name: str = "nalar-call") -> None:
        self.slots = max(1, slots)
        self.max_threads = max(self.slots, max_threads)
        self.idle_s = idle_s
        self.name = name
        self._lock = threading.Lock()
        self._stalled = threading.Condition(self._lock)  # the watcher waits on it
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._sleepers: list[threading.Event] = []  # idle threads, each on its own event
        self._threads = 0
        self._running = 0  # bodies running and not blocked
        self._progress = time.monotonic()  # when a thread last took a job
        self._watching = False
        self._closed = False
        self.peak_threads = 0

    @property
    def threads(self) -> int:
        """Threads alive now."""
        return self._threads

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a pool thread when a slot is free."""
        with self._lock:
            self._queue.append(fn)
            self._wake(eager=False)

    def _spawn(self, n: int) -> None:
        # Caller holds the lock.
        n = min(n, self.max_threads - self._threads)
        for _ in range(max(0, n)):
            self._threads += 1
            self.peak_threads = max(self.peak_threads, self._threads)
            threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()

    def _wake(self, *, eager: bool) -> None:
        # Caller holds the lock.
        if not self._queue or self._running >= self.slots or self._closed:
            return
        if self._sleepers:
            self._sleepers.pop().set()
        elif eager or self._threads < min(self._BASE, self.slots):
            self._spawn(1)
        elif self._threads < self.max_threads:
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True).start()
            else:
                self._stalled.notify()

    def _watch(self) -> None:
        """While jobs wait and the queue makes no progress, start more threads.

        One watcher per pool, started on the first wait: it sleeps until woken
        while nothing waits, and exits with the pool's last idle period.
        """
        with self._lock:
            try:
                while not self._closed:
                    if not self._queue:
                        if not self._stalled.wait(self.idle_s) and not self._queue:
                            return
                        continue
                    self._stalled.wait(self._STALL_S)
                    if not self._queue or self._running >= self.slots or self._threads >= self.max_threads:
                        continue
                    if self._sleepers:
                        self._sleepers.pop().set()
                        continue
                    stalled = time.monotonic() - self._progress
                    # A short stall may only be the GIL held elsewhere: one more thread.
                    # A long one means the bodies block: double.
                    if stalled >= self._LONG_STALL_S:
                        self._spawn(max(1, min(len(self._queue), self._threads)))
                    elif stalled >= self._STALL_S:
                        self._spawn(1)
            finally:
                self._watching = False

    def _lend(self) -> None:
        with self._lock:
            self._running -= 1
            self._wake(eager=True)  # the blocked body may wait for a queued one

    def _take_back(self) -> None:
        with self._lock:
            self._running += 1

    def close(self) -> None:
        """Let every thread exit once the queue is empty."""
        with self._lock:
            self._closed = True
            self._stalled.notify_all()
            sleepers, self._sleepers = self._sleepers, []
        for event in sleepers:
            event.set()

    def _next(self, event: threading.Event, done: bool = False) -> Callable[[], None] | None:
        """The next job for this thread (``done``: its last one just ended), or ``None`` when it should exit."""
        while True:
            with self._lock:
                if done:  # one lock round per job: the end of the last and the start of the next
                    done = False
                    self._running -= 1
                    self._progress = time.monotonic()
                if self._queue and self._running < self.slots:
                    self._running += 1
                    self._progress = time.monotonic()
                    return self._queue.popleft()
                if self._closed:
                    return None
                event.clear()
                self._sleepers.append(event)
            if event.wait(self.idle_s):
                continue  # woken for a job (or to close)
            with self._lock:
                if event in self._sleepers:  # nobody handed it a job: leave
                    self._sleepers.remove(event)
                    return None

    def _work(self) -> None:
        set_wait_hook(_Slot(self))
        event = threading.Event()
        try:
            fn = self._next(event)
            while fn is not None:
                try:
                    fn()
                except Exception:  # a job reports its own errors; this is a bug in the pool's caller
                    logger.exception("a call job failed outside its body")
                except BaseException:
                    with self._lock:
                        self._running -= 1
                    raise
                del fn  # hold nothing of the job while waiting for the next
                fn = self._next(event, done=True)
        finally:
            with self._lock:
                self._threads -= 1
                # A job queued while this thread was leaving must not wait for a stall.
                self._wake(eager=False)
            set_wait_hook(None)


class _CallLoop:
    """An event loop thread for ``async def`` bodies, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self.loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
            return self.loop

    def close(self) -> None:
        with self._lock:
            loop, thread, self.loop, self._thread = self.loop, self._thread, None, None
        if loop is None or thread is None:
            return

        def stop() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


Reply = Callable[[Outcome], None]


class WorkerExecutor:
    """Runs the jobs of one worker (see the module docstring).

    Args:
        address: The worker's address (for call contexts and errors).
        slots: ``nalar.worker-slots``: synchronous bodies that run at once.
        max_threads: Threads at most in the call pool.
        idle_s: An idle pool thread exits after this long.
        worker: The Dask worker object, when there is one (``get_worker()`` in bodies).
    """

    def __init__(self, address: str, *, slots: int = 64, max_threads: int = 512, worker: Any = None,
                 idle_s: float = 10.0) -> None:
        self.address = address
        self.worker = worker
        self.objects: dict[str, Any] = {}
        self._objects_lock = threading.Lock()
        self.threads = CallThreads(slots, max_threads, idle_s=idle_s, name="nalar-call")
        self._loop = _CallLoop("nalar-call-loop")
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._closed = False

    # -- running -----------------------------------------------------------------
    def run(self, job: Job, reply: Reply, *, sink: CallSink | None, access: Callable[[], Any]) -> None:
        """Start ``job``; ``reply(outcome)`` is called once, from the thread that ran it."""
        if self._closed:
            reply(Outcome(LOST, WorkerLostError(f"the executor of worker {self.address} is closed")))
            return
        # A body starts from an empty context: nothing of the dispatching thread leaks in.
        context = contextvars.Context()
        if job.is_async:
            loop = self._loop.get()
            loop.call_soon_threadsafe(self._start_task, job, reply, sink, access, context)
        else:
            self.threads.submit(lambda: context.run(self._run_sync, job, reply, sink, access))

    def _body(self, job: Job) -> Callable[..., Any]:
        target = getattr(job.target, "fn", job.target)  # a stub runs its function
        if isinstance(target, MethodTarget):
            with self._objects_lock:
                obj = self.objects.get(target.object_id)
            if obj is None:
                raise WorkerLostError(
                    f"hosted object {target.object_id} is not on worker {self.address} (its worker was lost?)"
                )
            return getattr(obj, target.method)  # type: ignore[no-any-return]
        if isinstance(target, CreateTarget):
            return functools.partial(self._create, target)
        return target  # type: ignore[no-any-return]

    def _enter(self, job: Job, sink: CallSink | None, access: Callable[[], Any]) -> tuple[Any, Any, Any]:
        tokens = enter_call(job.ctx, sink)
        scope = CallScope(job.ctx.session, access)
        handle = scope.activate()
        worker_token = None
        if self.worker is not None:
            worker_token = _set_dask_worker(self.worker)
        return tokens, (scope, handle), worker_token

    @staticmethod
    def _exit(state: tuple[Any, Any, Any]) -> CallScope:
        tokens, (scope, handle), worker_token = state
        CallScope.deactivate(handle)
        exit_call(tokens)
        if worker_token is not None:
            _reset_dask_worker(worker_token)
        return scope  # type: ignore[no-any-return]

    def _run_sync(self, job: Job, reply: Reply, sink: CallSink | None, access: Callable[[], Any]) -> None:
        state = self._enter(job, sink, access)
        try:
            value = self._body(job)(*job.args, **job.kwargs)
        except BaseException as exc:  # the body's own error is the call's result
            self._exit(state)
            reply(Outcome(ERROR, exc))
            return
        scope = self._exit(state)
        _reply_ok(reply, value, scope)

    def _start_task(self, job: Job, reply: Reply, sink: CallSink | None, access: Callable[[], Any],
                    context: contextvars.Context) -> None:
        loop = self._loop.loop
        if loop is None:
            reply(Outcome(LOST, WorkerLostError(f"the executor of worker {self.address} is closed")))
            return
        task = loop.create_task(self._run_async(job, reply, sink, access), context=context)
        self._tasks[job.ctx.call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.ctx.call_id, None))

    async def _run_async(self, job: Job, reply: Reply, sink: CallSink | None, access: Callable[[], Any]) -> None:
        state = self._enter(job, sink, access)
        try:
            value = await self._body(job)(*job.args, **job.kwargs)
        except BaseException as exc:  # cancellation included: the driver decides what it means
            self._exit(state)
            reply(Outcome(ERROR, exc))
            if not isinstance(exc, Exception):
                raise
            return
        scope = self._exit(state)
        _reply_ok(reply, value, scope)

    def _create(self, target: CreateTarget, *args: Any, **kwargs: Any) -> str:
        obj = target.cls(*args, **kwargs)
        with self._objects_lock:
            self.objects[target.object_id] = obj
        return target.object_id

    def cancel(self, call_id: str) -> bool:
        """Cancel a running ``async def`` body (a synchronous one runs to its end)."""
        loop = self._loop.loop
        task = self._tasks.get(call_id)
        if loop is None or task is None:
            return False
        loop.call_soon_threadsafe(task.cancel)
        return True

    def drop_objects(self, object_ids: list[str]) -> None:
        """Forget hosted objects."""
        with self._objects_lock:
            for oid in object_ids:
                self.objects.pop(oid, None)

    def close(self) -> None:
        """Stop the call loop and let the pool's threads exit."""
        self._closed = True
        self._loop.close()
        self.threads.close()
        with self._objects_lock:
            self.objects.clear()


def _reply_ok(reply: Reply, value: Any, scope: CallScope) -> None:
    try:
        ops = scope.encoded_ops()
    except BaseException as exc:
        reply(Outcome(ERROR, exc))
        return
    reply(Outcome(OK, value, ops))


def _set_dask_worker(worker: Any) -> Any:
    # ``distributed.get_worker()`` inside a body returns the worker that runs it.
    cvar = getattr(dask_worker, "_worker_cvar", None)
    return None if cvar is None else (cvar, cvar.set(worker))


def _reset_dask_worker(token: Any) -> None:
    cvar, tok = token
    try:
        cvar.reset(tok)
    except ValueError:  # reset from another context (an async body's task): nothing to undo
        pass
