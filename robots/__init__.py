"""Hardware layer: the arm and cameras behind small base classes, and the arm's safety layer.

The bottom layer of corft: :mod:`corft_robots.contract` (action and state semantics,
target composition) and :mod:`corft_robots.fr3` (the robot's constants) are numpy only,
and nothing here imports ``corft_envs`` or ``corft_algos``, which build on it.
Names are imported on first use (PEP 562), so ``import corft_robots.errors`` or
``corft_robots.safety`` loads neither driver: ``corft train`` runs on a GPU node
that has no ``franky`` and no ``libusb`` for ``pyrealsense2``.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "Arm": "corft_robots.base",
    "ArmState": "corft_robots.base",
    "COMMAND_KINDS": "corft_robots.base",
    "CommandKind": "corft_robots.base",
    "SentAction": "corft_robots.base",
    "Camera": "corft_robots.camera",
    "CameraConnectionError": "corft_robots.camera",
    "CameraError": "corft_robots.camera",
    "CameraFrame": "corft_robots.camera",
    "CameraIntrinsics": "corft_robots.camera",
    "CameraTimeoutError": "corft_robots.camera",
    "RobotConnectionError": "corft_robots.errors",
    "RobotContactError": "corft_robots.errors",
    "RobotControlError": "corft_robots.errors",
    "RobotError": "corft_robots.errors",
    "FrankaArm": "corft_robots.franka",
    "RealSenseCamera": "corft_robots.realsense",
    "CheckedChunk": "corft_robots.safety",
    "SafetyChecker": "corft_robots.safety",
    "SafetyLimits": "corft_robots.safety",
    "SafetyViolation": "corft_robots.safety",
    "VirtualRealSense": "corft_robots.virtual_realsense",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'corft_robots' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
