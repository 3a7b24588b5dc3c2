"""The Runtime's adapter methods: ``callback()``, ``middleware()``, ToolNode wrappers."""

from __future__ import annotations

from typing import Any

__all__ = ["AdapterMixin"]


class AdapterMixin:
    """Mixed into :class:`~nalar_plugin.Runtime`; see the adapters package."""

    def _init_adapters(self) -> None:
        """Called at the end of ``Runtime.__init__``."""

    def _close_adapters(self) -> None:
        """Called when the Runtime closes."""

    def callback(self, **options: Any) -> Any:
        """Return a LangChain callback handler that routes a run's calls through nalar."""
        raise NotImplementedError
