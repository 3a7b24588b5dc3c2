"""The Runtime's state methods: the store, the journal, retries, the checkpointer."""

from __future__ import annotations

from typing import Any

__all__ = ["StateMixin"]


class StateMixin:
    """Mixed into :class:`~nalar_plugin.Runtime`; see the state package."""

    def _init_state(self) -> None:
        """Called in ``Runtime.__init__`` once the Dask client exists, before any call."""

    def _close_state(self) -> None:
        """Called when the Runtime closes."""

    def _maybe_retry(self, call: Any, dask_future: Any) -> bool:
        """Called when a call's Dask task ended in error or was lost; True if it was resubmitted."""
        return False
