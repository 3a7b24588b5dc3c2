"""What runs inside a Dask task: the call's body, with its context set.

The task wrapper sets the call's context variables, so nested stub calls made by
the body know their session and parent. In the driver's process (threads mode)
nested calls go through the driver's Runtime and its controllers. In another
process (worker processes, a remote cluster) a :class:`WorkerRuntime` submits
them to the same cluster through the worker's client and reports them to the
driver with Dask events, so they still appear in the session's graph.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

from ._calls import CallMaker, replace_futures
from .context import CallContext, _call_var, _session_var
from .future import CANCELLED, ERROR, FINISHED, Future

__all__ = ["CreateTarget", "MethodTarget", "WorkerRuntime", "run_call", "run_call_async"]

logger = logging.getLogger(__name__)

EVENT_TOPIC = "nalar-calls"

# Runtimes living in this process, by token (threads mode: the worker finds the driver's).
RUNTIMES: dict[str, Any] = {}
# Objects of class stubs hosted in this process, by object id.
OBJECTS: dict[str, Any] = {}
_OBJECTS_LOCK = threading.Lock()

task_runtime: contextvars.ContextVar[Any] = contextvars.ContextVar("nalar_task_runtime", default=None)


class CreateTarget:
    """Instantiate a class stub's class and host the object in this process."""

    def __init__(self, cls: type, object_id: str) -> None:
        self.cls = cls
        self.object_id = object_id
        self.is_async = False

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        obj = self.cls(*args, **kwargs)
        with _OBJECTS_LOCK:
            OBJECTS[self.object_id] = obj
        return self.object_id


class MethodTarget:
    """Call a method of a hosted object."""

    def __init__(self, object_id: str, method: str, is_async: bool) -> None:
        self.object_id = object_id
        self.method = method
        self.is_async = is_async

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        obj = OBJECTS.get(self.object_id)
        if obj is None:
            from .errors import WorkerLostError

            raise WorkerLostError(f"hosted object {self.object_id} is not on this worker (its worker was lost?)")
        return getattr(obj, self.method)(*args, **kwargs)


def _body(target: Any) -> Any:
    fn = getattr(target, "fn", None)  # a Stub
    return fn if fn is not None else target


def _enter(ctx: CallContext, token: str) -> tuple[Any, ...]:
    rt = RUNTIMES.get(token)
    if rt is None:
        rt = WorkerRuntime.get(token)
    try:
        from distributed import get_worker

        ctx.executor = f"{ctx.executor or ''}@{get_worker().address}"
    except ValueError:
        pass
    return (_call_var.set(ctx), _session_var.set(ctx.session), task_runtime.set(rt))


def _exit(tokens: tuple[Any, ...]) -> None:
    _call_var.reset(tokens[0])
    _session_var.reset(tokens[1])
    task_runtime.reset(tokens[2])


def run_call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: CallContext, token: str) -> Any:
    """Run a synchronous call body on a worker thread, under the journal.

    A committed call returns its journaled result without running the body;
    otherwise the body's managed-state writes are committed with its result
    (see :mod:`nalar_plugin.state.execution`).
    """
    from .state.execution import run_sync

    tokens = _enter(ctx, token)
    try:
        return run_sync(_body(target), target, args, kwargs, ctx, token)
    finally:
        _exit(tokens)


async def run_call_async(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: CallContext, token: str) -> Any:
    """Run an ``async def`` call body on the worker's event loop, under the journal."""
    from .state.execution import run_async

    tokens = _enter(ctx, token)
    try:
        return await run_async(_body(target), target, args, kwargs, ctx, token)
    finally:
        _exit(tokens)


class WorkerRuntime(CallMaker):
    """Makes nested calls from a worker process that has no Runtime of its own."""

    _instances: dict[str, WorkerRuntime] = {}
    _lock = threading.Lock()

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    @classmethod
    def get(cls, token: str) -> WorkerRuntime:
        with cls._lock:
            rt = cls._instances.get(token)
            if rt is None:
                rt = cls._instances[token] = cls(token)
            return rt

    def _emit(self, worker: Any, ctx: CallContext, status: str) -> None:
        if worker is None:  # not made inside a task: nobody listens
            return
        worker.log_event(EVENT_TOPIC, {**ctx.to_dict(), "status": status, "token": self.token})

    def submit_call(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Submit a nested call straight to the cluster (see the module docstring)."""
        from distributed import get_client, get_worker

        call, deps = self.prepare(stub, stub.name, stub.method, args, kwargs, options)
        ctx = call.context
        try:
            worker: Any = get_worker()
        except ValueError:
            worker = None
        self._emit(worker, ctx, "pending")
        client = get_client()
        fn = run_call_async if stub.is_async else run_call
        a = replace_futures(args, lambda f: f._dask_future)
        kw = replace_futures(kwargs, lambda f: f._dask_future)

        def submit() -> None:
            attempt = f"-{ctx.attempt}" if ctx.attempt else ""
            dask_future = client.submit(
                fn, stub, a, kw, ctx, self.token,
                key=f"{ctx.component}-{ctx.call_id}{attempt}", pure=False, priority=int(ctx.priority),
                resources=dict(stub.directives.resources) or None,
            )
            call.future._attach(dask_future)
            dask_future.add_done_callback(done)

        def done(df: Any) -> None:
            state = {"finished": FINISHED, "error": ERROR}.get(df.status, CANCELLED)
            if state == ERROR and self._retry_later(ctx, df, submit):
                return
            call.future._finish(state)
            self._emit(worker, ctx, state)

        submit()
        return call.future

    def _retry_later(self, ctx: CallContext, dask_future: Any, submit: Any) -> bool:
        """Resubmit a nested call whose worker died, under the Runtime's retry policy.

        Nested calls made in a worker process do not pass the driver's
        controllers, so the ``nalar_should_retry`` hook (which lives in the
        driver) is not asked; the configured limit and backoff apply.
        """
        from .state.access import access_for
        from .state.retry import DEFAULT_RETRY, is_worker_loss

        try:
            exc = dask_future.exception(timeout=5)
        except Exception:  # the future is done; a failure to read it is not a worker loss
            return False
        if not is_worker_loss(exc):
            return False
        try:
            policy = access_for(self.token).retry
        except Exception:
            policy = DEFAULT_RETRY
        if not policy.allows(ctx.attempt):
            return False
        delay = policy.delay(ctx.attempt)
        ctx.attempt += 1
        logger.info("nested call %s lost its worker; attempt %d in %.2f s", ctx.call_id, ctx.attempt, delay)
        timer = threading.Timer(delay, submit)
        timer.daemon = True
        timer.start()
        return True
