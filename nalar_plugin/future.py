"""The future a call returns.

A :class:`Future` exists before its call runs: the call waits in its local
controller's queue until it is admitted (late binding), then runs on the
instance it was admitted to, and its result comes back to the future.

Code written for plain values works on futures: using a future as a value
(``len``, iteration, indexing, attribute access, ``str``, comparison, arithmetic)
materialises it, exactly as :func:`value` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from .context import CallContext
from .errors import CallCancelledError, CallTimeoutError, RuntimeStateError

__all__ = ["Future", "collect_futures", "replace_futures", "set_wait_hook", "value", "waiting"]

logger = logging.getLogger(__name__)

PENDING = "pending"  # waiting for its inputs
QUEUED = "queued"  # in a local controller's queue
RUNNING = "running"  # admitted: running on its instance
FINISHED = "finished"
ERROR = "error"
CANCELLED = "cancelled"
_DONE = (FINISHED, ERROR, CANCELLED)

_MISSING: Any = object()

# A thread of a worker's call pool registers how it gives its slot back while it
# blocks on a future (as Dask's secede does), so nested calls never deadlock.
_wait_hook = threading.local()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Mark a blocking wait of this thread: a call pool lends its slot to other calls meanwhile."""
    hook = getattr(_wait_hook, "hook", None)
    if hook is None:
        yield
        return
    hook.enter()
    try:
        yield
    finally:
        hook.exit()


def set_wait_hook(hook: Any) -> None:
    """Register this thread's wait hook (an object with ``enter()`` and ``exit()``), or ``None``."""
    _wait_hook.hook = hook


def _in_pool_thread() -> bool:
    return getattr(_wait_hook, "hook", None) is not None


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Future:
    """A handle on the result of one call, carrying its :class:`CallContext`.

    Use :meth:`available`, :meth:`value`/:meth:`result`, ``await``, :meth:`done`,
    :meth:`cancel` and :meth:`add_done_callback`. Futures may be passed as
    arguments to other stubs, also inside lists and dicts: that makes a
    dependency, and the dependent call is released as soon as its inputs exist.
    """

    __slots__ = (
        "_callbacks",
        "_canceller",
        "_event",
        "_exception",
        "_lock",
        "_state",
        "_value",
        "context",
        "__weakref__",
    )

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self._state = PENDING
        self._value: Any = _MISSING
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future], Any]] = []
        self._lock = threading.Lock()
        self._event: threading.Event | None = None
        self._canceller: Callable[[Future], bool] | None = None

    # -- state -----------------------------------------------------------
    @property
    def call_id(self) -> str:
        """The id of the call."""
        return self.context.call_id

    @property
    def status(self) -> str:
        """One of ``pending``, ``queued``, ``running``, ``finished``, ``error``, ``cancelled``."""
        return self._state

    def done(self) -> bool:
        """Return True once the call finished, failed or was cancelled."""
        return self._state in _DONE

    def available(self) -> bool:
        """Return True when the value can be read without waiting (the paper's ``available()``)."""
        return self._state == FINISHED

    def cancelled(self) -> bool:
        """Return True if the call was cancelled."""
        return self._state == CANCELLED

    def cancel(self) -> bool:
        """Cancel the call: a queued call never runs; a running call's body is cancelled.

        Returns:
            True if the call is cancelled now (or was already), False if it had
            already finished or failed.
        """
        if self._state == CANCELLED:
            return True
        if self._state in _DONE:
            return False
        canceller = self._canceller
        if canceller is not None:
            return canceller(self)
        return self._finish(CANCELLED, exception=CallCancelledError(f"call {self.call_id} was cancelled"))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the call and return its exception, or ``None`` if it succeeded."""
        self._wait(timeout)
        return None if self._state == FINISHED else self._exception

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` when the call is done (at once if it already is).

        Callbacks run in the thread that completes the future; exceptions they
        raise are logged and contained.
        """
        with self._lock:
            if self._state not in _DONE:
                self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Future], Any]) -> None:
        try:
            fn(self)
        except Exception:
            logger.exception("done callback %r of call %s failed", fn, self.call_id)

    # -- completion (used by the call path) --------------------------------
    def _set_state(self, state: str) -> None:
        with self._lock:
            if self._state not in _DONE:
                self._state = state

    def _finish(self, state: str, *, value: Any = _MISSING, exception: BaseException | None = None) -> bool:
        with self._lock:
            if self._state in _DONE:
                return False
            self._state = state
            if value is not _MISSING:
                self._value = value
            if exception is None and state != FINISHED:
                exception = CallCancelledError(f"call {self.call_id} was cancelled")
            self._exception = exception
            callbacks, self._callbacks = self._callbacks, []
            event = self._event
        if event is not None:
            event.set()
        for fn in callbacks:
            self._run_callback(fn)
        return True

    # -- waiting ---------------------------------------------------------
    def _wait(self, timeout: float | None) -> None:
        if self._state in _DONE:
            return
        if _on_event_loop() and not _in_pool_thread():
            raise RuntimeStateError(
                f"call {self.call_id} is not done and blocking would freeze this event loop; "
                "use `await future` inside async code"
            )
        with self._lock:
            if self._state in _DONE:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        with waiting():
            if not event.wait(timeout):
                raise CallTimeoutError(f"call {self.call_id} did not finish within {timeout} s")

    def _block(self, timeout: float | None = None) -> None:
        """Wait for the call in this thread, event loop or not (for waits known to be short)."""
        with self._lock:
            if self._state in _DONE:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        with waiting():
            if not event.wait(timeout):
                raise CallTimeoutError(f"call {self.call_id} did not finish within {timeout} s")

    def value(self, timeout: float | None = None) -> Any:
        """Wait for the call and return its value.

        Args:
            timeout: Seconds to wait at most; ``None`` waits for ever.

        Returns:
            The value the call returned.

        Raises:
            CallTimeoutError: The call did not finish in time.
            Exception: Whatever the call raised, with its original type and traceback.
        """
        self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._value

    def result(self, timeout: float | None = None) -> Any:
        """Alias of :meth:`value`, as on ``concurrent.futures.Future``."""
        return self.value(timeout)

    async def _avalue(self) -> Any:
        if self._state not in _DONE:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def release() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            def wake(_: Future) -> None:
                try:
                    if asyncio.get_running_loop() is loop:
                        release()
                        return
                except RuntimeError:
                    pass
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:  # the waiting loop closed: nobody waits any more
                    pass

            self.add_done_callback(wake)
            try:
                await waiter
            except asyncio.CancelledError:
                # The task awaiting the call was cancelled: so is the call.
                self.cancel()
                raise
        if self._exception is not None:
            raise self._exception
        return self._value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._avalue().__await__()

    # -- plain-value behaviour ---------------------------------------------
    def __repr__(self) -> str:
        ctx = self.context
        return f"<nalar.Future {ctx.component}.{ctx.method} call={ctx.call_id} session={ctx.session} {self._state}>"

    def __str__(self) -> str:
        return str(self.value())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self.value(), name)

    def __len__(self) -> int:
        return len(self.value())

    def __iter__(self) -> Any:
        return iter(self.value())

    def __contains__(self, item: Any) -> bool:
        return item in self.value()

    def __getitem__(self, key: Any) -> Any:
        return self.value()[key]

    def __bool__(self) -> bool:
        return bool(self.value())

    def __int__(self) -> int:
        return int(self.value())

    def __float__(self) -> float:
        return float(self.value())

    def __index__(self) -> int:
        return operator.index(self.value())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value()(*args, **kwargs)

    # A future hashes by identity so it can sit in sets and dict keys; equality
    # compares values, as plain code expects.
    __hash__ = object.__hash__

    def __reduce__(self) -> Any:
        # Shipping a future materialises it: the receiver gets the value.
        return (_identity, (self.value(),))


def _identity(x: Any) -> Any:
    return x


def _binary(op: Callable[[Any, Any], Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def fwd(self: Future, other: Any) -> Any:
        return op(self.value(), value(other))

    def rev(self: Future, other: Any) -> Any:
        return op(value(other), self.value())

    return fwd, rev


for _name, _op in {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
}.items():
    _fwd, _rev = _binary(_op)
    setattr(Future, f"__{_name}__", _fwd)
    setattr(Future, f"__r{_name}__", _rev)

for _name, _op in {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}.items():
    setattr(Future, f"__{_name}__", _binary(_op)[0])

for _name, _op1 in {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert}.items():
    setattr(Future, f"__{_name}__", lambda self, _f=_op1: _f(self.value()))


def value(x: Any, timeout: float | None = None) -> Any:
    """Return the value of a future, or ``x`` itself when it is a plain value.

    Lists, tuples and dicts are walked, so ``value([f1, f2])`` returns their values.
    """
    if isinstance(x, Future):
        return x.value(timeout)
    if type(x) in (list, tuple):
        return type(x)(value(v, timeout) for v in x)
    if type(x) is dict:
        return {k: value(v, timeout) for k, v in x.items()}
    return x


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
