"""Adapters that route LangChain and LangGraph calls through nalar."""

from __future__ import annotations

from .mixin import AdapterMixin

__all__ = ["AdapterMixin"]
