"""The camera interface every camera driver implements, what it returns, and its errors.

A :class:`Camera` is connected, read and disconnected; use it as a context
manager (``with RealSenseCamera(...) as camera: frame = camera.read()``). A
read returns a :class:`CameraFrame`: an RGB image and, when the camera was
asked for it, a depth image registered to it (one depth value per colour
pixel). A read that gets no frame within its timeout raises
:class:`CameraTimeoutError`; it never blocks for ever.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import numpy as np

from corft_robots.errors import RobotConnectionError, RobotError

_CameraT = TypeVar("_CameraT", bound="Camera")


class CameraError(RobotError):
    """Base class of every error raised by a camera."""


class CameraConnectionError(CameraError, RobotConnectionError):
    """The camera (or recording) cannot be opened or started, or is not connected; the message says what to check."""


class CameraTimeoutError(CameraError, TimeoutError):
    """The camera delivered no frame within the read timeout (the message names the camera and the timeout)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image, in pixels, with no distortion.

    Pixel ``(u, v)`` (column, row) has its centre at ``(u, v)``, so the centre
    of a ``W x H`` image is ``((W - 1) / 2, (H - 1) / 2)``; this is
    librealsense's convention.

    :param width: image width (px).
    :param height: image height (px).
    :param fx: focal length along x (px).
    :param fy: focal length along y (px).
    :param ppx: principal point, column (px).
    :param ppy: principal point, row (px).
    """

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> CameraIntrinsics:
        """Intrinsics of an ideal camera with square pixels and a centred principal point.

        This is how MuJoCo renders a camera with vertical field of view ``fovy``.

        :param width: image width (px).
        :param height: image height (px).
        :param fovy_deg: vertical field of view (degrees), in (0, 180).
        """
        if not 0.0 < fovy_deg < 180.0:
            raise ValueError(f"fovy_deg must be in (0, 180) degrees, got {fovy_deg}")
        focal = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(width, height, focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass(frozen=True)
class CameraFrame:
    """One read of a camera.

    :param color: ``H x W x 3`` ``uint8`` RGB image (a copy the caller owns).
    :param depth: ``H x W`` ``uint16`` depth registered to ``color`` in units of
        ``depth_scale`` metres (0 = no depth at that pixel), or ``None`` if the
        camera was not asked for depth.
    :param depth_scale: metres per depth unit, or ``None`` without depth.
    :param timestamp_ms: the colour frame's timestamp on the device's clock (ms).
    :param frame_number: the colour frame's number as counted by the device.
    """

    color: np.ndarray
    depth: np.ndarray | None
    depth_scale: float | None
    timestamp_ms: float
    frame_number: int

    def depth_m(self) -> np.ndarray:
        """Depth in metres as ``float32`` (0 where there is no depth).

        :raises ValueError: if the frame has no depth.
        """
        if self.depth is None or self.depth_scale is None:
            raise ValueError("this frame has no depth: create the camera with use_depth=True")
        return self.depth.astype(np.float32) * np.float32(self.depth_scale)


class Camera(ABC):
    """A camera that delivers RGB frames, and optionally depth registered to them.

    The base class owns the connection state, the context manager and the
    read timeout; a driver implements :meth:`_connect`, :meth:`_disconnect` and
    :meth:`_read`.

    :param read_timeout_s: default time a :meth:`read` waits for a frame (s).
    """

    def __init__(self, read_timeout_s: float) -> None:
        if not read_timeout_s > 0.0:
            raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}")
        self.read_timeout_s = read_timeout_s
        self._connected = False

    # -- what a driver implements -------------------------------------------------------------

    @property
    @abstractmethod
    def name(self) -> str:
        """A human-readable name that identifies this camera in messages and logs."""

    @abstractmethod
    def _connect(self) -> None:
        """Open the device and start streaming; on failure, release what was opened and raise."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Stop streaming and release the device (the camera is connected)."""

    @abstractmethod
    def _read(self, timeout_s: float) -> CameraFrame:
        """Wait at most ``timeout_s`` for the next frame (the camera is connected)."""

    # -- shared behaviour ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether the camera is streaming and can be read."""
        return self._connected

    def connect(self) -> None:
        """Open the camera and start streaming; does nothing if already connected.

        :raises CameraConnectionError: if the camera cannot be opened or started.
        :raises CameraTimeoutError: if the camera starts but delivers no frames.
        """
        if self._connected:
            return
        self._connect()
        self._connected = True

    def disconnect(self) -> None:
        """Stop streaming and release the camera; does nothing if not connected."""
        if not self._connected:
            return
        self._connected = False
        self._disconnect()

    def read(self, timeout_s: float | None = None) -> CameraFrame:
        """The next frame from the camera.

        :param timeout_s: how long to wait for it (s); ``read_timeout_s`` if ``None``.
        :raises CameraConnectionError: if the camera is not connected.
        :raises CameraTimeoutError: if no frame arrives within the timeout.
        """
        if not self._connected:
            raise CameraConnectionError(f"{self.name} is not connected: call connect() (or use it in a with block)")
        timeout = self.read_timeout_s if timeout_s is None else timeout_s
        if not timeout > 0.0:
            raise ValueError(f"timeout_s must be positive, got {timeout}")
        return self._read(timeout)

    def __enter__(self: _CameraT) -> _CameraT:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.disconnect()
