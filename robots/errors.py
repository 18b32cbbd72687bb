"""Errors of the hardware layer: one clear type per thing the operator has to do.

Drivers translate their library's exceptions into these, with a message that
names the robot and says what to check, so calling code never has to know
``franky``'s (or any other driver's) exception types.
"""

from __future__ import annotations


class RobotError(RuntimeError):
    """Base class of every error raised by the hardware layer."""


class RobotConnectionError(RobotError):
    """The robot cannot be reached, or the connection was lost (the message names the host)."""


class RobotControlError(RobotError):
    """The robot refused or aborted a command: a reflex, a limit, the user stop, a gripper fault."""


class RobotContactError(RobotControlError):
    """An unexpected contact force stopped the arm (the driver's contact reaction fired)."""
