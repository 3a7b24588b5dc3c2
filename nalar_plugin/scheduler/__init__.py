"""The two-level controller: local controllers per instance and a global controller."""

from __future__ import annotations

from .autoscale import AutoscalePolicy
from .controller import Call, ControlPlane, LocalController
from .decisions import (
    ComponentStats,
    Decision,
    InstanceStats,
    Kill,
    Migrate,
    Provision,
    Route,
    RouteWeights,
    SessionStats,
    SetPriority,
    Snapshot,
)
from .global_controller import GlobalController
from .policies import FCFSPolicy, Policy

__all__ = [
    "AutoscalePolicy",
    "Call",
    "ComponentStats",
    "ControlPlane",
    "Decision",
    "FCFSPolicy",
    "GlobalController",
    "InstanceStats",
    "Kill",
    "LocalController",
    "Migrate",
    "Policy",
    "Provision",
    "Route",
    "RouteWeights",
    "SessionStats",
    "SetPriority",
    "Snapshot",
]
