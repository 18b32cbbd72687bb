"""RealSenseCamera against real pyrealsense2 components, no hardware and no mocks.

Frames go in through a VirtualRealSense (a pyrealsense2 software device) or a
.db3 recording the tests make themselves, and come out through the camera's
pipeline, ``try_wait_for_frames``, ``rs.align`` and numpy copy: the code path a
real camera takes. Images are 64 x 48 to keep the suite fast.
"""

from __future__ import annotations

import threading
import time
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pyrealsense2 as rs
import pytest

from corft_robots.camera import CameraConnectionError, CameraFrame, CameraIntrinsics, CameraTimeoutError
from corft_robots.errors import RobotConnectionError, RobotError
from corft_robots.realsense import RealSenseCamera
from corft_robots.virtual_realsense import VirtualRealSense

WIDTH, HEIGHT = 64, 48
STEP_COLUMN = 32  # depth images here are NEAR_MM left of this column, FAR_MM from it on
NEAR_MM, FAR_MM = 700, 1500


@pytest.fixture
def virtual() -> VirtualRealSense:
    with VirtualRealSense(WIDTH, HEIGHT, fps=30) as device:
        yield device


def make_camera(source: VirtualRealSense, **kwargs: object) -> RealSenseCamera:
    options = {"width": WIDTH, "height": HEIGHT, "fps": 30, "warmup_frames": 0, "read_timeout_s": 1.0}
    options.update(kwargs)
    return RealSenseCamera(device=source.device, **options)


def random_color(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def step_depth(near_mm: int) -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), FAR_MM, dtype=np.uint16)
    depth[:, :STEP_COLUMN] = near_mm
    return depth


def assert_aligned_depth(frame: CameraFrame, near_mm: int) -> None:
    """Aligned depth keeps the step: every valid pixel two columns or more from it has the pushed value.

    ``rs.align`` reprojects pixel footprints and rounds, which leaves a few
    holes (0) even between identical cameras; a real camera has holes too.
    """
    assert frame.depth is not None and frame.depth.dtype == np.uint16
    assert frame.depth.shape == (HEIGHT, WIDTH)
    assert frame.depth_scale == pytest.approx(0.001)
    valid = frame.depth > 0
    assert valid.mean() > 0.9
    near, far = frame.depth[:, : STEP_COLUMN - 2], frame.depth[:, STEP_COLUMN + 2 :]
    assert np.all(near[near > 0] == near_mm)
    assert np.all(far[far > 0] == FAR_MM)
    np.testing.assert_allclose(frame.depth_m()[valid], frame.depth[valid] * 0.001, rtol=1e-6)


def test_colour_and_aligned_depth_round_trip(virtual: VirtualRealSense) -> None:
    with make_camera(virtual, use_depth=True) as camera:
        for index in range(3):
            color, depth = random_color(index), step_depth(NEAR_MM + index)
            number = virtual.push(color, depth, timestamp_ms=1000.0 + 40.0 * index)
            frame = camera.read()
            np.testing.assert_array_equal(frame.color, color)
            assert frame.color.dtype == np.uint8
            assert frame.frame_number == number == index
            assert frame.timestamp_ms == pytest.approx(1000.0 + 40.0 * index)
            assert_aligned_depth(frame, NEAR_MM + index)
        assert astuple(camera.intrinsics) == pytest.approx(astuple(virtual.intrinsics))
    assert not camera.is_connected


def test_colour_only_camera_ignores_pushed_depth(virtual: VirtualRealSense) -> None:
    with make_camera(virtual) as camera:
        color = random_color(7)
        virtual.push(color, step_depth(NEAR_MM))
        frame = camera.read()
    np.testing.assert_array_equal(frame.color, color)
    assert frame.depth is None and frame.depth_scale is None
    with pytest.raises(ValueError, match="use_depth=True"):
        frame.depth_m()


def test_warmup_discards_the_first_frames_of_a_live_camera() -> None:
    fps, warmup = 30, 6
    rendered = 0

    def render() -> tuple[np.ndarray, np.ndarray]:
        nonlocal rendered
        color = np.full((HEIGHT, WIDTH, 3), rendered % 256, dtype=np.uint8)
        rendered += 1
        return color, step_depth(NEAR_MM)

    with VirtualRealSense(WIDTH, HEIGHT, fps=fps) as virtual:
        virtual.start_streaming(render)
        first_after_start = rendered
        start = time.monotonic()
        with make_camera(virtual, fps=fps, warmup_frames=warmup) as camera:
            connect_s = time.monotonic() - start
            frame = camera.read()
    # Frames pushed before the pipeline started are dropped (the one being rendered when streaming
    # started may come just after), and each warm-up read takes a newer frame.
    assert frame.frame_number >= first_after_start + warmup - 1
    assert connect_s >= (warmup - 2) / fps
    assert np.all(frame.color == frame.frame_number % 256)


def test_read_times_out_when_frames_stop(virtual: VirtualRealSense) -> None:
    with make_camera(virtual) as camera:
        virtual.push(random_color(0))
        camera.read()
        start = time.monotonic()
        with pytest.raises(CameraTimeoutError, match=r"RealSense VIRTUAL0001 delivered no frame within 0\.3 s") as info:
            camera.read(timeout_s=0.3)
        elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 0.8
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RobotError)


def test_read_times_out_when_the_streaming_thread_stops(virtual: VirtualRealSense) -> None:
    virtual.start_streaming(lambda: (random_color(1), None))
    with make_camera(virtual, warmup_frames=2) as camera:
        np.testing.assert_array_equal(camera.read().color, random_color(1))
        virtual.stop_streaming()
        with pytest.raises(CameraTimeoutError):
            for _ in range(2):  # the pipeline may still hold the newest frame pushed before the stop
                start = time.monotonic()
                camera.read(timeout_s=0.3)
        assert 0.25 <= time.monotonic() - start < 0.8


def test_connect_times_out_during_warmup_and_leaves_the_camera_closed(virtual: VirtualRealSense) -> None:
    camera = make_camera(virtual, warmup_frames=1, read_timeout_s=0.2)
    with pytest.raises(CameraTimeoutError, match="within 0.2 s"):
        camera.connect()
    assert not camera.is_connected
    with pytest.raises(CameraConnectionError, match="not connected"):
        camera.read()


def record(virtual: VirtualRealSense, path: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stream ``count`` frames through a camera that records them to ``path``; return what was pushed."""
    pushed = []
    with make_camera(virtual, use_depth=True, record_to=path) as camera:
        for index in range(count):
            color, depth = random_color(100 + index), step_depth(NEAR_MM + 10 * index)
            virtual.push(color, depth)
            camera.read()
            pushed.append((color, depth))
    return pushed


def test_record_and_play_back(virtual: VirtualRealSense, tmp_path: Path) -> None:
    path = tmp_path / "session.db3"
    pushed = record(virtual, path, count=5)
    assert path.stat().st_size > 0

    with RealSenseCamera(recording=path, width=WIDTH, height=HEIGHT, use_depth=True, warmup_frames=0) as camera:
        assert astuple(camera.intrinsics) == pytest.approx(astuple(virtual.intrinsics))
        for index, (color, _) in enumerate(pushed):
            frame = camera.read()
            assert frame.frame_number == index
            np.testing.assert_array_equal(frame.color, color)
            assert_aligned_depth(frame, NEAR_MM + 10 * index)
        with pytest.raises(CameraTimeoutError, match="session.db3.*no more frames"):
            camera.read(timeout_s=0.3)

    with RealSenseCamera(recording=path, width=WIDTH, height=HEIGHT, warmup_frames=3) as camera:
        frame = camera.read()
    assert frame.frame_number == 3
    np.testing.assert_array_equal(frame.color, pushed[3][0])


def test_missing_serial_names_the_connected_cameras_and_what_to_check() -> None:
    connected = sorted(device.get_info(rs.camera_info.serial_number) for device in rs.context().query_devices())
    camera = RealSenseCamera("000000000000", read_timeout_s=0.5)
    with pytest.raises(CameraConnectionError) as info:
        camera.connect()
    message = str(info.value)
    assert "'000000000000'" in message
    assert f"connected serial numbers: {', '.join(connected) or 'none'}" in message
    assert "USB 3" in message and "rs-enumerate-devices" in message
    assert isinstance(info.value, RobotConnectionError)
    assert not camera.is_connected


def test_no_camera_connected() -> None:
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(CameraConnectionError, match="no RealSense camera is connected.*rs-enumerate-devices"):
        RealSenseCamera().connect()


def test_recording_must_exist_and_be_db3(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.db3.*convert_bag_to_db3"):
        RealSenseCamera(recording=tmp_path / "old.bag")
    with pytest.raises(ValueError, match="record_to must be a .db3 file"):
        RealSenseCamera(record_to=tmp_path / "out.mp4")
    missing = tmp_path / "missing.db3"
    with pytest.raises(CameraConnectionError, match="missing.db3' does not exist"):
        RealSenseCamera(recording=missing).connect()


def test_unsupported_stream_lists_what_the_device_offers(virtual: VirtualRealSense) -> None:
    camera = RealSenseCamera(device=virtual.device, width=640, height=480, warmup_frames=0)
    with pytest.raises(CameraConnectionError, match=r"cannot stream colour 640x480.*Color 64x48 rgb8 @ 30 fps"):
        camera.connect()
    assert not camera.is_connected


def test_constructor_rejects_conflicting_sources(virtual: VirtualRealSense, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most one camera source"):
        RealSenseCamera("123", device=virtual.device)
    with pytest.raises(ValueError, match="record_to cannot be used while playing back"):
        RealSenseCamera(recording=tmp_path / "a.db3", record_to=tmp_path / "b.db3")
    with pytest.raises(TypeError, match=r"VirtualRealSense\(\.\.\.\)\.device"):
        RealSenseCamera(device=virtual)


def test_virtual_device_checks_what_is_pushed(virtual: VirtualRealSense) -> None:
    with pytest.raises(ValueError, match="color must be a 48 x 64 x 3 uint8 array"):
        virtual.push(np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="depth must be a 48 x 64 uint16 array"):
        virtual.push(random_color(0), np.zeros((HEIGHT, WIDTH), dtype=np.float32))
    virtual.push(random_color(0), timestamp_ms=10.0)
    with pytest.raises(ValueError, match="timestamps must increase"):
        virtual.push(random_color(0), timestamp_ms=10.0)
    with pytest.raises(ValueError, match="intrinsics are for 32x24 images"):
        VirtualRealSense(WIDTH, HEIGHT, intrinsics=CameraIntrinsics.from_fovy(32, 24, 60.0))


def test_streaming_thread_keeps_the_render_error(virtual: VirtualRealSense) -> None:
    failed = threading.Event()

    def render() -> tuple[np.ndarray, None]:
        failed.set()
        raise RuntimeError("renderer lost its GL context")

    virtual.start_streaming(render)
    assert failed.wait(2.0)
    virtual.stop_streaming()
    assert not virtual.is_streaming
    assert isinstance(virtual.streaming_error, RuntimeError)
