"""The public names: sorted and complete `__all__` in every public module."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "nalar_plugin",
    "nalar_plugin.errors",
    "nalar_plugin.context",
    "nalar_plugin.future",
    "nalar_plugin.stubs",
    "nalar_plugin.scheduler",
    "nalar_plugin.scheduler.decisions",
    "nalar_plugin.scheduler.policies",
    "nalar_plugin.scheduler.compose",
    "nalar_plugin.scheduler.autoscale",
    "nalar_plugin.graph",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert exported == sorted(exported)
    for n in exported:
        assert hasattr(mod, n), n
    if name.count(".") >= 1 and not name.endswith("scheduler"):
        defined = {
            n for n, obj in vars(mod).items()
            if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == name
        }
        assert defined <= set(exported), defined - set(exported)


def test_every_error_is_a_nalar_error() -> None:
    from nalar_plugin import errors

    for n in errors.__all__:
        cls = getattr(errors, n)
        assert issubclass(cls, (errors.NalarError, errors.NalarWarning)), n
