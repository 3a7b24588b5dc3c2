"""The Runtime's state methods: the store, the journal, retries, the checkpointer.

The store lives in ``Runtime(state_dir=...)`` or the setting ``nalar.state-dir``
(default ``.nalar/state``, relative to the driver's working directory), created
with mode 0700. A directory that is corrupted, belongs to something else or
cannot be written stops the Runtime before any call runs, with a
:class:`~nalar_plugin.errors.StateError` that names the directory, and nothing
in it is changed.

When calls may run in other processes (worker processes, a cluster reached by
address) the Runtime registers a :class:`~nalar_plugin.state.plugin.StatePlugin`
on the scheduler; see :mod:`nalar_plugin.state.access` for how workers reach
the state through it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nalar_plugin.errors import ClusterError, NalarError, RuntimeStateError, StateError
from nalar_plugin.future import _map_dask_error
from nalar_plugin.state.checkpoint import DiskcacheSaver
from nalar_plugin.state.journal import Journal, JournalRecord
from nalar_plugin.state.retry import RetryPolicy, is_worker_loss
from nalar_plugin.state.serde import default_serde
from nalar_plugin.state.store import Store

__all__ = ["StateMixin"]

logger = logging.getLogger(__name__)


class StateMixin:
    """Mixed into :class:`~nalar_plugin.Runtime`; see the state package."""

    # Provided by the Runtime.
    config: dict[str, Any]
    client: Any
    cluster: Any
    token: str
    closed: bool
    plugins: Any
    plane: Any
    _store: Store | None = None
    _journal: Journal | None = None

    def _init_state(self) -> None:
        """Called in ``Runtime.__init__`` once the Dask client exists, before any call.

        Raises:
            StateCorruptedError: The state directory is corrupted or foreign.
            StateReadOnlyError: It cannot be written.
            StateError: It cannot be opened otherwise.
            ClusterError: The scheduler could not load the state plugin.
            ConfigError: A bad retry or state setting.
        """
        from nalar_plugin.state.access import parse_allowed_types

        self._retry_lock = threading.Lock()
        self._retry_timers: dict[int, tuple[threading.Timer, Any, Any]] = {}
        self._state_plugin: str | None = None
        path = self.config.get("state-dir") or ".nalar/state"
        try:
            self.retry_policy = RetryPolicy.from_config(self.config)
            self._allowed_types = [str(t) for t in (self.config.get("state-allowed-types") or [])]
            serde = default_serde(allowed_types=parse_allowed_types(self._allowed_types))
            try:
                self._store = Store(path, serde=serde)
            except StateError as exc:
                # Same class, so callers can tell a foreign directory from a read-only one.
                raise type(exc)(f"the Runtime cannot use its state directory (nalar.state-dir={path!r}): {exc}") from exc
            self._journal = Journal(self._store)
            if self.cluster is None or self.config.get("processes"):
                self._register_state_plugin()
        except BaseException:
            self._abandon_cluster()
            raise

    def _register_state_plugin(self) -> None:
        from nalar_plugin.state.plugin import StatePlugin, identity_key, plugin_name

        assert self._store is not None
        # Lets the scheduler prove it opened this very directory; expires by
        # itself if the driver dies without closing.
        self._store.set_bytes(identity_key(self.token), b"", expire=86400)
        plugin = StatePlugin(self.token, str(self._store.path), self.retry_policy.to_dict(), self._allowed_types)
        try:
            self.client.register_plugin(plugin, name=plugin_name(self.token))
        except NalarError:
            raise
        except Exception as exc:
            raise ClusterError(
                f"the Dask scheduler could not start nalar's state plugin: {exc}. The scheduler's "
                "environment needs nalar-plugin installed, and the state directory "
                f"{str(self._store.path)!r} must be writable from the scheduler's host"
            ) from exc
        self._state_plugin = plugin_name(self.token)

    def _abandon_cluster(self) -> None:
        """Release what ``Runtime.__init__`` made before the state failed to open."""
        if self._store is not None:
            from nalar_plugin.state.plugin import identity_key

            try:
                self._store.delete(identity_key(self.token))
            except StateError:
                pass
            self._store.close()
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def _close_state(self) -> None:
        """Called when the Runtime closes: stop retries, release the plugin, close the store."""
        with self._retry_lock:
            pending = list(self._retry_timers.values())
            self._retry_timers.clear()
        for timer, call, dask_future in pending:
            timer.cancel()
            self._give_up(call, dask_future, RuntimeStateError(
                f"the Runtime closed while call {call.context.call_id} waited to be retried"
            ))
        if self._state_plugin is not None:
            try:
                self.client.sync(self.client.scheduler.nalar_state, request="release", token=self.token)
                self.client.unregister_scheduler_plugin(self._state_plugin)
            except Exception as exc:  # the cluster may be gone already; the store closes anyway
                logger.debug("could not release the state plugin: %s", exc)
            self._state_plugin = None
        if self._store is not None:
            from nalar_plugin.state.plugin import identity_key

            try:
                self._store.delete(identity_key(self.token))
            except StateError as exc:  # closing must not fail on a store gone bad
                logger.debug("could not delete the Runtime's identity key: %s", exc)
            self._store.close()

    # -- public ------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The Runtime's state :class:`Store`."""
        if self._store is None:
            raise RuntimeStateError("this Runtime has no state store")
        return self._store

    @property
    def journal(self) -> Journal:
        """The call journal and managed state over :attr:`store`."""
        if self._journal is None:
            raise RuntimeStateError("this Runtime has no state store")
        return self._journal

    def checkpointer(self, **kwargs: Any) -> DiskcacheSaver:
        """Return a LangGraph checkpointer bound to the Runtime's store.

        ``graph = builder.compile(checkpointer=rt.checkpointer())``; a driver
        restarted with the same state directory resumes each thread from its
        last checkpoint, and the journal keeps committed tool effects from
        running twice.

        Args:
            **kwargs: Passed to :class:`DiskcacheSaver` (``serde=``).
        """
        return DiskcacheSaver(self.store, **kwargs)

    def forget_session(self, session: str) -> int:
        """Delete the journal records and the managed state of ``session``.

        Its calls run again when made again. Returns the number of keys deleted.
        """
        return self.journal.forget_session(session)

    def journal_records(self, session: str) -> list[JournalRecord]:
        """The committed calls of ``session``, oldest first."""
        return self.journal.records(session)

    # -- retries -----------------------------------------------------------------
    def _maybe_retry(self, call: Any, dask_future: Any) -> bool:
        """Called when a call's Dask task ended in error or was lost; True if it was resubmitted.

        Only a lost worker is retried, and never a call pinned to one worker (a
        hosted object's state died with it). The ``nalar_should_retry`` hook
        decides first; ``None`` leaves it to ``nalar.retries``.
        """
        if self.closed or dask_future.status != "error" or call.extra.get("workers"):
            return False
        ctl = self.plane.instances.get(call.instance or "")
        if call.extra.get("component_call") and getattr(getattr(ctl, "address", None), "worker", None):
            return False  # an instance hosted on the dead worker died with it
        try:
            exc = dask_future.exception(timeout=5)
        except Exception:  # done futures answer at once; anything else is not a worker loss
            return False
        if not is_worker_loss(exc):
            return False
        ctx = call.context
        error = _map_dask_error(exc)  # hooks see WorkerLostError, as result() would
        try:
            decision = self.plugins.hook.nalar_should_retry(call=call, error=error, attempt=ctx.attempt)
        except Exception as hook_exc:  # a decision hook's failure reaches the caller
            call.future._finish("error", exception=hook_exc)
            return False
        if decision is None:
            decision = self.retry_policy.allows(ctx.attempt)
        if not decision:
            return False
        delay = self.retry_policy.delay(ctx.attempt)
        ctx.attempt += 1
        logger.info("call %s lost its worker; attempt %d in %.2f s", ctx.call_id, ctx.attempt, delay)
        timer = threading.Timer(delay, self._resubmit, args=(call, dask_future))
        timer.daemon = True
        with self._retry_lock:
            self._retry_timers[id(call)] = (timer, call, dask_future)
        timer.start()
        return True

    def _resubmit(self, call: Any, dask_future: Any) -> None:
        with self._retry_lock:
            if self._retry_timers.pop(id(call), None) is None:
                return  # the Runtime closed and gave the call up
        ctl = self.plane.instances.get(call.instance or "")
        if self.closed or ctl is None:
            self._give_up(call, dask_future, None)
            return
        try:
            self._dispatch(call, ctl)  # type: ignore[attr-defined]
        except Exception as exc:
            self._give_up(call, dask_future, exc)

    def _give_up(self, call: Any, dask_future: Any, exc: BaseException | None) -> None:
        """Finish a call that will not run again (its last error stands, or ``exc``)."""
        self.plane.complete(call)
        if exc is not None:
            call.future._finish("error", exception=exc)
        else:
            call.future._finish("error")
        self.plugins.notify("nalar_call_finished", call=call, status="error", error=exc)
