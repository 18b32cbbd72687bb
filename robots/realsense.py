"""Intel RealSense (D4xx) camera on ``pyrealsense2``: a real camera, a virtual one, or a recording.

:class:`RealSenseCamera` streams RGB (``rgb8``) and, with ``use_depth``, depth
aligned to the colour image (``rs.align`` to colour). It reads from one of
three sources, through one code path: an ``rs.config`` selects the streams,
an ``rs.pipeline`` starts them, every read is ``pipeline.try_wait_for_frames``
with the read timeout, then ``align``, then a copy into numpy. Only the way
the pipeline finds its device differs:

- a real camera (``serial_number``, or none for the first one connected):
  ``config.enable_device(serial)`` after checking that the serial is connected;
- an existing ``rs.device`` (``device=``), e.g. the ``software_device`` of a
  :class:`corft_robots.virtual_realsense.VirtualRealSense`: ``pipeline.set_device``
  (in ``pyrealsense2`` 2.59 a software device added to a context with
  ``add_to`` is still not listed by ``query_devices``, so ``enable_device``
  cannot find it; ``set_device`` works);
- a ``.db3`` recording (``recording=``): ``context.load_device(path)``, playback
  switched to non-real-time, then ``pipeline.set_device``. Each read returns
  the next recorded frame, none skipped, as fast as they are read; after the
  last one a read raises :class:`corft_robots.camera.CameraTimeoutError`.

``record_to="x.db3"`` records everything the device streams while connected,
warm-up frames included (``config.enable_record_to_file``); the file is complete after
:meth:`RealSenseCamera.disconnect`. ``pyrealsense2`` 2.59 writes and reads
ROS2/SQLite ``.db3`` files only: ``.bag`` is refused.

The pipeline keeps only the newest frameset, so a live read returns the
latest frame and frames that arrived since the previous read are dropped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from corft_robots.camera import Camera, CameraConnectionError, CameraFrame, CameraIntrinsics, CameraTimeoutError
from corft_robots.extras import import_optional

rs = import_optional("pyrealsense2", "real", "the RealSense cameras (corft_robots.realsense)")

logger = logging.getLogger(__name__)

_RECORDING_SUFFIX = ".db3"
_HARDWARE_HINT = (
    "Check that the camera is plugged into a USB 3 port with a USB 3 cable, that no other program "
    "(realsense-viewer, another process) holds it, and run `rs-enumerate-devices` to list the cameras "
    "librealsense sees."
)


def _recording_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, or a ValueError naming ``what`` if its extension is not ``.db3``."""
    path = Path(path)
    if path.suffix != _RECORDING_SUFFIX:
        hint = (
            " Convert a ROS1 .bag with rs.context().convert_bag_to_db3(bag_path, db3_path)."
            if path.suffix == ".bag"
            else ""
        )
        raise ValueError(
            f"{what} must be a .db3 file (pyrealsense2 >= 2.59 records and plays back ROS2/SQLite .db3 only), "
            f"got '{path}'.{hint}"
        )
    return path


def _offered_streams(device: rs.device) -> str:
    """The colour and depth stream profiles ``device`` offers, one short line each."""
    offered = set()
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() in (rs.stream.color, rs.stream.depth) and profile.is_video_stream_profile():
                video = profile.as_video_stream_profile()
                size = f"{video.width()}x{video.height()}"
                offered.add(f"{profile.stream_name()} {size} {profile.format().name} @ {profile.fps()} fps")
    return "; ".join(sorted(offered)) or "no colour or depth streams"


class RealSenseCamera(Camera):
    """An Intel RealSense camera: RGB frames, and optionally depth aligned to them.

    Give at most one source: ``serial_number`` (a real camera; ``None`` with no
    other source takes the first one connected), ``device`` (an existing
    ``rs.device``, e.g. ``VirtualRealSense(...).device``) or ``recording`` (a
    ``.db3`` file).

    :param serial_number: serial number of the real camera to open; with no
        source at all, set on connect to the serial of the first camera found.
    :param device: an ``rs.device`` to stream from, e.g. a ``software_device``.
    :param recording: a ``.db3`` recording to play back (frame by frame, not in real time).
    :param width: colour (and depth) image width (px).
    :param height: colour (and depth) image height (px).
    :param fps: frame rate to request.
    :param use_depth: also stream depth and return it aligned to the colour image.
    :param warmup_frames: frames read and discarded on connect (a real camera's
        auto-exposure settles in about a second); this applies to recordings
        too, so pass 0 to replay one from its first frame.
    :param read_timeout_s: default time a read waits for a frame (s).
    :param record_to: a ``.db3`` file to record the device's streams to while connected.
    """

    def __init__(
        self,
        serial_number: str | None = None,
        *,
        device: rs.device | None = None,
        recording: str | os.PathLike[str] | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        use_depth: bool = False,
        warmup_frames: int = 30,
        read_timeout_s: float = 1.0,
        record_to: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(read_timeout_s)
        given = (("serial_number", serial_number), ("device", device), ("recording", recording))
        sources = [name for name, value in given if value is not None]
        if len(sources) > 1:
            raise ValueError(f"give at most one camera source, got {' and '.join(sources)}")
        if device is not None and not isinstance(device, rs.device):
            raise TypeError(
                f"device must be an rs.device, e.g. VirtualRealSense(...).device, got {type(device).__name__}"
            )
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"width, height and fps must be positive, got {width}x{height} at {fps} fps")
        if warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {warmup_frames}")
        self.serial_number = serial_number
        self.device = device
        self.recording = None if recording is None else _recording_path(recording, "recording")
        if record_to is not None and self.recording is not None:
            raise ValueError("record_to cannot be used while playing back a recording: copy the .db3 file instead")
        self.record_to = None if record_to is None else _recording_path(record_to, "record_to")
        self.width = width
        self.height = height
        self.fps = fps
        self.use_depth = use_depth
        self.warmup_frames = warmup_frames
        self._pipeline: rs.pipeline | None = None
        self._align: rs.align | None = None
        self._playback: rs.playback | None = None
        self._intrinsics: CameraIntrinsics | None = None

    @property
    def name(self) -> str:
        """``RealSense <serial>``, or ``RealSense recording <file>`` for a recording."""
        if self.recording is not None:
            return f"RealSense recording '{self.recording}'"
        if self.device is not None:
            if self.device.supports(rs.camera_info.serial_number):
                return f"RealSense {self.device.get_info(rs.camera_info.serial_number)}"
            return "RealSense (software device)"
        return f"RealSense {self.serial_number or '(first connected)'}"

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the colour image, which aligned depth shares (the camera is connected)."""
        if self._intrinsics is None:
            raise CameraConnectionError(f"{self.name} is not connected: its intrinsics are read on connect()")
        return self._intrinsics

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        context = rs.context()
        pipeline = rs.pipeline(context)
        config = rs.config()
        device = self._select_device(context, pipeline, config)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.use_depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        if self.record_to is not None:
            if not self.record_to.parent.is_dir():
                raise CameraConnectionError(
                    f"cannot record {self.name} to '{self.record_to}': its folder does not exist"
                )
            config.enable_record_to_file(str(self.record_to))
        try:
            profile = pipeline.start(config)
        except RuntimeError as error:
            self._playback = None
            wanted = f"colour {self.width}x{self.height} rgb8" + (" and depth z16" if self.use_depth else "")
            raise CameraConnectionError(
                f"{self.name} cannot stream {wanted} at {self.fps} fps ({error}). "
                f"It offers: {_offered_streams(device)}."
            ) from error
        video = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self._intrinsics = CameraIntrinsics(video.width, video.height, video.fx, video.fy, video.ppx, video.ppy)
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if self.use_depth else None
        logger.info(
            "%s streaming %dx%d at %d fps, depth %s", self.name, self.width, self.height, self.fps, self.use_depth
        )
        try:
            for _ in range(self.warmup_frames):
                self._read(self.read_timeout_s)
        except BaseException:
            self._disconnect()
            raise

    def _select_device(self, context: rs.context, pipeline: rs.pipeline, config: rs.config) -> rs.device:
        """Point ``pipeline`` / ``config`` at this camera's source and return its device."""
        if self.device is not None:
            pipeline.set_device(self.device)
            return self.device
        if self.recording is not None:
            if not self.recording.is_file():
                raise CameraConnectionError(
                    f"recording '{self.recording.resolve()}' does not exist: check the path "
                    "(record one with RealSenseCamera(..., record_to=path))"
                )
            device = context.load_device(str(self.recording))
            self._playback = device.as_playback()
            self._playback.set_real_time(False)
            pipeline.set_device(device)
            return device
        connected = {device.get_info(rs.camera_info.serial_number): device for device in context.query_devices()}
        listed = ", ".join(sorted(connected)) or "none"
        if self.serial_number is None:
            if not connected:
                raise CameraConnectionError(f"no RealSense camera is connected. {_HARDWARE_HINT}")
            self.serial_number = min(connected)
        elif self.serial_number not in connected:
            raise CameraConnectionError(
                f"no RealSense camera with serial number '{self.serial_number}' is connected "
                f"(connected serial numbers: {listed}). {_HARDWARE_HINT}"
            )
        config.enable_device(self.serial_number)
        return connected[self.serial_number]

    def _disconnect(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        self._align = None
        self._playback = None
        self._intrinsics = None
        if pipeline is not None:
            pipeline.stop()
        logger.info("%s stopped", self.name)

    # -- reading ------------------------------------------------------------------------------

    def _read(self, timeout_s: float) -> CameraFrame:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000.0)
            if remaining_ms <= 0:
                raise self._timeout_error(timeout_s)
            arrived, frames = self._pipeline.try_wait_for_frames(remaining_ms)
            if not arrived:
                raise self._timeout_error(timeout_s)
            # A frameset can lack a stream (a real camera does that while starting): wait for a whole one.
            if not frames.get_color_frame() or (self.use_depth and not frames.get_depth_frame()):
                continue
            if self._align is not None:
                frames = self._align.process(frames)
            color = frames.get_color_frame()
            depth = frames.get_depth_frame() if self.use_depth else None
            return CameraFrame(
                color=np.array(color.get_data(), copy=True),
                depth=None if depth is None else np.array(depth.get_data(), copy=True),
                depth_scale=None if depth is None else depth.get_units(),
                timestamp_ms=color.get_timestamp(),
                frame_number=color.get_frame_number(),
            )

    def _timeout_error(self, timeout_s: float) -> CameraTimeoutError:
        message = f"{self.name} delivered no frame within {timeout_s:g} s"
        if self._playback is not None and self._playback.current_status() == rs.playback_status.stopped:
            return CameraTimeoutError(f"{message}: the recording has no more frames (playback finished)")
        if self.device is not None:
            return CameraTimeoutError(f"{message}: is anything still pushing frames to this device?")
        return CameraTimeoutError(f"{message}. {_HARDWARE_HINT}")
