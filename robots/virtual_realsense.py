"""A virtual Intel RealSense: a ``pyrealsense2`` software device fed with images.

:class:`VirtualRealSense` builds an ``rs.software_device`` with a colour
sensor (``rgb8``) and a depth sensor (``z16``) at one resolution and frame
rate, with the given pinhole intrinsics for both and an identity depth-to-
colour extrinsic (a simulator renders colour and depth from one viewpoint).
Frames go in with :meth:`VirtualRealSense.push`, or from a background thread
that calls a render function at the frame rate
(:meth:`VirtualRealSense.start_streaming`). Pass ``virtual.device`` to
:class:`corft_robots.realsense.RealSenseCamera` and the camera reads it through the
same ``pipeline`` / ``align`` code as a real camera.

What ``pyrealsense2`` 2.59 does here (measured):

- a software device never shows up in ``context.query_devices()``, not even
  after ``device.add_to(context)``; a pipeline uses it after
  ``pipeline.set_device(device)``;
- the pixels are copied when a frame is injected, so the caller's arrays may
  be reused at once;
- frames pushed to a sensor that is not streaming are dropped silently, so a
  camera that reads colour only simply never sees the depth frames;
- the pipeline pairs colour and depth frames by timestamp; a colour frame
  pushed without depth while the reader asks for depth is not delivered on
  its own (nothing arrived within 0.5 s), the next complete pair is;
- the pipeline keeps only the newest frameset: a reader always gets the
  latest frame, and frames pushed between two reads are dropped.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from corft_robots.camera import CameraIntrinsics
from corft_robots.extras import import_optional

rs = import_optional("pyrealsense2", "real", "the virtual RealSense (corft_robots.virtual_realsense)")

logger = logging.getLogger(__name__)

#: Called by the streaming thread for every frame: returns the colour image
#: (``H x W x 3`` ``uint8`` RGB) and the depth image (``H x W`` ``uint16``, or
#: ``None`` for no depth frame).
RenderFn = Callable[[], tuple[np.ndarray, np.ndarray | None]]

#: Vertical field of view of a D435's colour camera (degrees), the default.
D435_COLOR_FOVY_DEG = 42.0

# Stream unique ids of software streams are chosen by the caller; these start
# far above the ids librealsense hands out to real devices' streams.
_stream_uids = itertools.count(1 << 20)

_VirtualT = TypeVar("_VirtualT", bound="VirtualRealSense")

_IDENTITY_ROTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


class VirtualRealSense:
    """A software RealSense with a colour and a depth stream, fed with images.

    The pipeline's timestamps must increase: :meth:`push` stamps each frame
    ``1000 / fps`` ms after the previous one unless given a timestamp.
    Used as a context manager it stops the streaming thread on leaving.

    :param width: image width (px).
    :param height: image height (px).
    :param fps: nominal frame rate, also the streaming thread's rate.
    :param intrinsics: pinhole intrinsics of both streams; by default those of
        an ideal camera with a D435 colour camera's 42 degree vertical field of view.
    :param depth_scale: metres per depth unit (a D4xx's default is 0.001).
    :param serial_number: the serial number the device reports.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        intrinsics: CameraIntrinsics | None = None,
        depth_scale: float = 0.001,
        serial_number: str = "VIRTUAL0001",
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"width, height and fps must be positive, got {width}x{height} at {fps} fps")
        if not depth_scale > 0.0:
            raise ValueError(f"depth_scale must be positive (metres per unit), got {depth_scale}")
        if intrinsics is None:
            intrinsics = CameraIntrinsics.from_fovy(width, height, D435_COLOR_FOVY_DEG)
        if (intrinsics.width, intrinsics.height) != (width, height):
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} images "
                f"but the device streams {width}x{height}"
            )
        self.width = width
        self.height = height
        self.fps = fps
        self.intrinsics = intrinsics
        self.depth_scale = depth_scale
        self.serial_number = serial_number

        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Virtual RealSense")
        self.device.register_info(rs.camera_info.serial_number, serial_number)
        self._depth_sensor = self.device.add_sensor("Stereo Module")
        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
        self._depth_profile = self._add_stream(self._depth_sensor, rs.stream.depth, rs.format.z16, 2)
        self._color_profile = self._add_stream(self._color_sensor, rs.stream.color, rs.format.rgb8, 3)
        identity = rs.extrinsics()
        identity.rotation = _IDENTITY_ROTATION
        identity.translation = [0.0, 0.0, 0.0]
        self._depth_profile.register_extrinsics_to(self._color_profile, identity)
        # Pair frames the way a D4xx does (depth, left, right, colour by timestamp).
        self.device.create_matcher(rs.matchers.dlr_c)

        self._push_lock = threading.Lock()
        self._frame_number = 0
        self._last_timestamp_ms: float | None = None
        self._stream_thread: threading.Thread | None = None
        self._stop_streaming = threading.Event()
        self._streaming_error: BaseException | None = None

    def _add_stream(
        self, sensor: rs.software_sensor, stream: rs.stream, fmt: rs.format, bytes_per_pixel: int
    ) -> rs.video_stream_profile:
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = self.width, self.height
        intrinsics.fx, intrinsics.fy = self.intrinsics.fx, self.intrinsics.fy
        intrinsics.ppx, intrinsics.ppy = self.intrinsics.ppx, self.intrinsics.ppy
        intrinsics.model = rs.distortion.none
        intrinsics.coeffs = [0.0] * 5
        spec = rs.video_stream()
        spec.type, spec.index, spec.uid = stream, 0, next(_stream_uids)
        spec.width, spec.height, spec.fps = self.width, self.height, self.fps
        spec.bpp, spec.fmt, spec.intrinsics = bytes_per_pixel, fmt, intrinsics
        return sensor.add_video_stream(spec, True).as_video_stream_profile()

    # -- frames -------------------------------------------------------------------------------

    def push(self, color: np.ndarray, depth: np.ndarray | None = None, timestamp_ms: float | None = None) -> int:
        """Inject one colour frame and, optionally, the depth frame taken with it.

        :param color: ``H x W x 3`` ``uint8`` RGB image.
        :param depth: ``H x W`` ``uint16`` depth in units of ``depth_scale``
            metres (0 = no depth), registered to ``color``; ``None`` pushes
            colour only (a camera reading depth will not deliver that frame).
        :param timestamp_ms: the frames' device timestamp (ms), greater than the
            previous one; ``None`` for the previous one plus ``1000 / fps``.
        :returns: the frame number given to the frame(s).
        """
        color = self._checked(color, (self.height, self.width, 3), np.uint8, "color")
        if depth is not None:
            depth = self._checked(depth, (self.height, self.width), np.uint16, "depth")
        with self._push_lock:
            if timestamp_ms is None:
                timestamp_ms = 0.0 if self._last_timestamp_ms is None else self._last_timestamp_ms + 1000.0 / self.fps
            elif self._last_timestamp_ms is not None and timestamp_ms <= self._last_timestamp_ms:
                raise ValueError(f"timestamps must increase: got {timestamp_ms} ms after {self._last_timestamp_ms} ms")
            number = self._frame_number
            if depth is not None:
                self._depth_sensor.on_video_frame(self._frame(depth, self._depth_profile, timestamp_ms, number))
            self._color_sensor.on_video_frame(self._frame(color, self._color_profile, timestamp_ms, number))
            self._frame_number += 1
            self._last_timestamp_ms = timestamp_ms
        return number

    def _checked(self, image: np.ndarray, shape: tuple[int, ...], dtype: type, what: str) -> np.ndarray:
        image = np.asarray(image)
        if image.shape != shape or image.dtype != dtype:
            raise ValueError(
                f"{what} must be a {' x '.join(map(str, shape))} {np.dtype(dtype).name} array for this "
                f"{self.width}x{self.height} device, got shape {image.shape} {image.dtype}"
            )
        return np.ascontiguousarray(image)

    def _frame(
        self, pixels: np.ndarray, profile: rs.video_stream_profile, timestamp_ms: float, number: int
    ) -> rs.software_video_frame:
        frame = rs.software_video_frame()
        frame.pixels = pixels
        frame.bpp = pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
        frame.stride = pixels.strides[0]
        frame.timestamp = timestamp_ms
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = number
        frame.profile = profile
        if pixels.dtype == np.uint16:
            frame.depth_units = self.depth_scale
        return frame

    # -- streaming thread ---------------------------------------------------------------------

    @property
    def is_streaming(self) -> bool:
        """Whether the streaming thread is running."""
        return self._stream_thread is not None and self._stream_thread.is_alive()

    @property
    def streaming_error(self) -> BaseException | None:
        """The exception that stopped the last streaming thread, or ``None``."""
        return self._streaming_error

    def start_streaming(self, render_fn: RenderFn) -> None:
        """Push ``render_fn()``'s images at ``fps`` from a background thread, like a free-running camera.

        ``render_fn`` runs on that thread: an OpenGL renderer (MuJoCo's, with
        EGL) must be created on it, or its context made current there. If it
        raises, streaming stops, the exception is logged and kept in
        :attr:`streaming_error`, and readers time out. When rendering is
        slower than ``fps`` frames go out as fast as they are rendered.

        :param render_fn: returns ``(color, depth)`` as :meth:`push` takes them.
        :raises RuntimeError: if the device is already streaming.
        """
        if self.is_streaming:
            raise RuntimeError(
                f"virtual RealSense {self.serial_number} is already streaming: call stop_streaming() first"
            )
        self._stop_streaming.clear()
        self._streaming_error = None
        self._stream_thread = threading.Thread(
            target=self._stream, args=(render_fn,), name=f"virtual-realsense-{self.serial_number}", daemon=True
        )
        self._stream_thread.start()

    def stop_streaming(self) -> None:
        """Stop the streaming thread and wait for it; does nothing if it is not running."""
        self._stop_streaming.set()
        if self._stream_thread is not None:
            self._stream_thread.join()
            self._stream_thread = None

    def _stream(self, render_fn: RenderFn) -> None:
        period = 1.0 / self.fps
        deadline = time.monotonic()
        try:
            while not self._stop_streaming.is_set():
                color, depth = render_fn()
                self.push(color, depth)
                deadline = max(deadline + period, time.monotonic())
                self._stop_streaming.wait(max(0.0, deadline - time.monotonic()))
        except Exception as error:
            self._streaming_error = error
            logger.exception("virtual RealSense %s stopped streaming", self.serial_number)

    def __enter__(self: _VirtualT) -> _VirtualT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_streaming()
