"""Hardware layer: the arm and cameras behind small base classes, and the arm's safety layer.

The bottom layer of corft: :mod:`robots.contract` (action and state semantics,
target composition) and :mod:`robots.fr3` (the robot's constants) are numpy only,
and nothing here imports ``corft_envs`` or ``corft_algos``, which build on it.
Names are imported on first use (PEP 562), so ``import robots.errors`` or
``robots.safety`` loads neither driver: ``corft train`` runs on a GPU node
that has no ``franky`` and no ``libusb`` for ``pyrealsense2``.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "Arm": "robots.base",
    "ArmState": "robots.base",
    "COMMAND_KINDS": "robots.base",
    "CommandKind": "robots.base",
    "SentAction": "robots.base",
    "Camera": "robots.camera",
    "CameraConnectionError": "robots.camera",
    "CameraError": "robots.camera",
    "CameraFrame": "robots.camera",
    "CameraIntrinsics": "robots.camera",
    "CameraTimeoutError": "robots.camera",
    "RobotConnectionError": "robots.errors",
    "RobotContactError": "robots.errors",
    "RobotControlError": "robots.errors",
    "RobotError": "robots.errors",
    "FrankaArm": "robots.franka",
    "RealSenseCamera": "robots.realsense",
    "CheckedChunk": "robots.safety",
    "SafetyChecker": "robots.safety",
    "SafetyLimits": "robots.safety",
    "SafetyViolation": "robots.safety",
    "VirtualRealSense": "robots.virtual_realsense",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'robots' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
