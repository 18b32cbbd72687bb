"""Hardware layer: the arm and cameras behind small base classes, and the arm's safety layer."""

from robots.base import Arm, ArmState, SentAction
from robots.camera import Camera, CameraConnectionError, CameraError, CameraFrame, CameraIntrinsics, CameraTimeoutError
from robots.errors import RobotConnectionError, RobotContactError, RobotControlError, RobotError
from robots.franka import FrankaArm
from robots.realsense import RealSenseCamera
from robots.safety import CheckedChunk, SafetyChecker, SafetyLimits, SafetyViolation
from robots.virtual_realsense import VirtualRealSense

__all__ = [
    "Arm",
    "ArmState",
    "Camera",
    "CameraConnectionError",
    "CameraError",
    "CameraFrame",
    "CameraIntrinsics",
    "CameraTimeoutError",
    "CheckedChunk",
    "FrankaArm",
    "RealSenseCamera",
    "RobotConnectionError",
    "RobotContactError",
    "RobotControlError",
    "RobotError",
    "SafetyChecker",
    "SafetyLimits",
    "SafetyViolation",
    "SentAction",
    "VirtualRealSense",
]
