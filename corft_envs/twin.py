"""The protocol-level twin of the real setup: a franky-sim server whose scene holds the task.

``robot_host="twin"`` runs the real env's whole code path against a simulator:
:class:`TwinWorld` starts a ``franky-sim`` server on a loopback address that
speaks the libfranka network protocol, so ``franky.Robot(world.hostname,
realtime_config=franky.RealtimeConfig.Ignore)`` drives it unchanged; its MuJoCo
scene also holds the task's table, objects and fixture, and :meth:`TwinWorld.render`
gives the camera images a virtual RealSense is fed with. Success is judged from
the twin's state (:meth:`TwinWorld.is_success`).

The scene is franky-sim's FR3 with the sim env's additions and appearance, so
both produce the same images and coordinates (the robot base is the world
origin, on the table top):

- franky-sim's own ground plane (at z = 0, through our table top) and lights
  (whose names clash with ours) make way for :func:`~corft_envs.scene.add_task_elements`;
- the ``tcp`` site, the ``wrist`` camera and the collision-mesh colours are
  copied from the sim env's FR3 (:func:`~corft_envs.scene.build_scene_xml`),
  and so are its ``<visual>`` settings (no shadows, no MSAA, an offscreen buffer
  of ``image_size``);
- the FR3's visual meshes (group 2, 242k faces, about 80 renders/s) are dropped
  as the sim env drops them, and the cameras draw the collision meshes
  (:data:`~corft_envs.scene.RENDER_GEOM_GROUPS`). Physics is unchanged (visual
  geoms have no contacts and every moving body has its own inertia); the twin
  starts in 0.02 s instead of 0.7 s and takes about 260 MiB less memory.

Threads. franky-sim has no lock: :class:`~franky_sim.SimulationServer` steps
the physics in its own thread at 1 kHz, and :class:`~franky_sim.BaseSimulator`
offers pre- and post-step callbacks. The twin registers a pair that holds the
lock of :meth:`TwinWorld.physics` from just before ``mj_step`` to the end of
the step's state bookkeeping. Every read or write of the MuJoCo state from
another thread goes through ``with world.physics() as (model, data)``, which
waits for the step in progress and keeps the next one from starting. Outside
the lock the server thread only reads the robot's joint positions and
velocities and writes the robot's applied forces (franky commands, the
gripper servo); the twin writes neither while the server runs
(:meth:`TwinWorld.reset_robot_state` pauses it). Rendering copies the scene
under the lock (``update_scene``, tens of microseconds) and draws outside it.
An OpenGL context belongs to the thread that made it, so all drawing runs in
one thread the twin owns, whatever thread calls :meth:`TwinWorld.render`.

The server thread shares the GIL with the rest of its process: a busy pure
Python thread beside it slows the physics to a few percent of real time (0.05 s
of simulated time in 2 s; a 5 cm franky move took 7.3 s instead of 0.3 s), and
on a loaded CPU franky's 1 s receive timeout then fires. So :func:`start_twin`
runs the world in a process of its own
(:class:`~corft_envs.twin_process.TwinWorldProcess`), where nothing but the
server, the success checks and the renders runs; a :class:`TwinWorld` used in a
test's own process should be polled with a sleep.

franky-sim 1.0.4 reports the commanded pose as the measured one: its
``O_T_EE`` equals ``O_T_EE_d`` (both hold pinocchio's same frame placement),
so franky's pose leads the arm during a motion and ends at the target while
the arm still settles (about 0.3 s). :meth:`TwinWorld.tcp_pose` is measured.
This is left as it is on purpose: franky-sim's servo lags its commanded pose
by centimetres (2.6 cm during a 10 cm move at 20% dynamics), where a real
FR3 tracks it within about a millimetre, so the commanded pose is the closer
stand-in for what the real arm reports. Reporting the twin's true pose instead made every target, set
from the measured pose, chase that lag: the scripted expert needed 116.5 steps
instead of 53 at full dynamics (10 PickPlace episodes).

franky-sim 1.0.4 also answers a grasp whose fingers settle outside the width
tolerance with the status ``kFail``, which libfranka raises as a
``CommandException``; the Franka Hand answers ``kUnsuccessful``, which
libfranka's ``grasp`` returns as ``False`` (a missed grasp is not a fault).
Starting a twin makes its gripper answer as the hand does
(:func:`report_missed_grasps_as_the_franka_hand_does`, a setting of the
``franky_sim`` package); importing this module changes nothing.

:func:`start_twin` gives what the real env drives on the twin: a running
:class:`TwinWorld` and one :class:`~corft_robots.virtual_realsense.VirtualRealSense`
per camera streaming its renders (:class:`Twin`). It needs corft's ``real`` extra: franky-sim's server
with the pinocchio stack it imports, and pyrealsense2 for the cameras.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

import mujoco
import numpy as np
from gymnasium.utils import seeding

from corft_robots.extras import import_optional

# The core installs franky-sim without its dependencies, for the FR3 model files only: its server needs the real extra.
import_optional("franky_sim", "real", "the twin (robot_host='twin')")
from franky_sim import SimulationServer, franka_gripper_server  # noqa: E402
from franky_sim.constants import FRANKA_HAND_VELOCITY_LIMIT  # noqa: E402
from franky_sim.franka_gripper_protocol import GripperCommandStatus  # noqa: E402
from franky_sim.mujoco_simulator import FrankaMujocoRobot, MujocoSimulator  # noqa: E402

from corft_envs.layouts import check_positions_mode, sample_layout
from corft_envs.robot_model import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, drop_visual_meshes
from corft_envs.scene import RENDER_GEOM_GROUPS, add_task_elements, apply_layout, build_scene_xml
from corft_envs.sim_env import CAMERAS, DEFAULT_IMAGE_SIZE, check_flag, check_image_size
from corft_envs.tasks import N_OBJECTS, SceneState, Task, get_task
from corft_envs.twin_process import TwinWorldProcess
from corft_robots.fr3 import GRIPPER_MAX_WIDTH, HOME_JOINT_POSITIONS
from corft_robots.virtual_realsense import VirtualRealSense

#: Name prefix franky-sim gives the first robot's bodies, joints and geoms.
ROBOT_PREFIX = "robot0_"
#: Longest wait for the physics thread to finish a step (s); beyond it the thread has died.
LOCK_TIMEOUT = 5.0
#: Gripping force (N) of the open command in :meth:`TwinWorld.reset_robot_state`, as franky-sim's Move.
OPEN_GRIPPER_FORCE = 70.0
#: Server ticks (1 ms each) run after :meth:`TwinWorld.reset_robot_state` so that the
#: velocity filters of franky-sim's robot state forget the jump (they decay by 0.95 per tick).
RESET_SETTLE_TICKS = 300
#: Frame rate the twin's virtual cameras stream at, as a RealSense's default.
TWIN_CAMERA_FPS = 30
#: How long a read of a twin camera waits for a frame (s). A RealSense's 1 s default fits a sensor; the
#: twin's frames are renders of a process sharing the CPU, which a loaded machine can hold up for longer
#: (an evaluation beside a training and two busy processes on 2 cores waited over 1 s), and waiting is harmless in a rehearsal.
TWIN_CAMERA_READ_TIMEOUT_S = 10.0
#: The arm's ``state_timeout`` on the twin (s): how long its clock may stand still before the connection
#: counts as lost. The real FR3's 0.3 s would read a twin process held up by a loaded CPU as a lost robot;
#: a server that died is still noticed, a few seconds later.
TWIN_STATE_TIMEOUT_S = 3.0


class _FrankaHandGraspStatus(enum.IntEnum):
    """franky-sim's gripper statuses with a missed grasp's ``kFail`` answered as ``kUnsuccessful``."""

    kSuccess = GripperCommandStatus.kSuccess.value
    kUnsuccessful = GripperCommandStatus.kUnsuccessful.value
    kFail = GripperCommandStatus.kUnsuccessful.value  # an alias: franky-sim uses kFail only for missed grasps
    kAborted = GripperCommandStatus.kAborted.value


def report_missed_grasps_as_the_franka_hand_does() -> None:
    """Make franky-sim's gripper server answer a missed grasp with ``kUnsuccessful``, as the Franka Hand does.

    franky-sim 1.0.4 sends ``kFail`` in one place, a grasp settled outside its
    width tolerance; this swaps the status enum its gripper server module uses,
    for every server of the process (franky-sim makes its gripper servers itself
    and has no per-server setting). :meth:`TwinWorld.start` calls it; calling it
    again changes nothing.
    """
    franka_gripper_server.GripperCommandStatus = _FrankaHandGraspStatus


def _replace_child(parent: ET.Element, replacement: ET.Element) -> None:
    """Put a copy of ``replacement`` in place of ``parent``'s child with the same tag."""
    old = parent.find(replacement.tag)
    index = list(parent).index(old)
    parent.remove(old)
    parent.insert(index, copy.deepcopy(replacement))


def _remove_staging(worldbody: ET.Element) -> None:
    """Remove franky-sim's ground plane and lights, which the task's table and lights replace."""
    for element in list(worldbody):
        if element.tag == "light" or element.get("name") == "ground":
            worldbody.remove(element)


def _copy_collision_colours(source: ET.Element, target: ET.Element) -> None:
    """Give ``target``'s collision geoms the colours ``source``'s geoms of the same mesh have."""
    colours = {geom.get("mesh"): geom.get("rgba") for geom in source.findall("geom") if geom.get("rgba")}
    for geom in target.findall("geom"):
        if geom.get("class") == "collision" and geom.get("mesh") in colours:
            geom.set("rgba", colours[geom.get("mesh")])


def _graft_robot_additions(reference_base: ET.Element, worldbody: ET.Element) -> None:
    """Copy the sim env's sites, cameras and collision colours onto franky-sim's FR3.

    Sites and cameras keep their names (``tcp``, ``wrist``). Body attributes are
    not copied: the sim env's ``gravcomp`` would double franky-sim's gravity
    compensation, which its torque controller does itself.
    """
    bodies = {body.get("name"): body for body in worldbody.iter("body")}
    for reference in reference_base.iter("body"):
        body = bodies[ROBOT_PREFIX + reference.get("name")]
        body.extend(copy.deepcopy(child) for child in reference if child.tag in ("site", "camera"))
        _copy_collision_colours(reference, body)


def build_twin_simulator(task: Task, image_size: int) -> tuple[MujocoSimulator, FrankaMujocoRobot]:
    """A franky-sim simulator (not started) with one FR3 at home and ``task``'s scene.

    :param task: the task whose table, objects and fixture are added.
    :param image_size: camera image side (px); sets the offscreen buffer size.
    :return: the simulator and its robot.
    """
    simulator = MujocoSimulator()
    robot = simulator.add_robot(initial_q=tuple(HOME_JOINT_POSITIONS), initial_hand_width=GRIPPER_MAX_WIDTH)
    reference = ET.fromstring(build_scene_xml(task, image_size))
    _replace_child(simulator.scene, reference.find("visual"))
    _replace_child(simulator.scene, reference.find("default"))
    _remove_staging(simulator.worldbody)
    drop_visual_meshes(simulator.worldbody.find(f"body[@name='{ROBOT_PREFIX}base']"), simulator.scene.find("asset"))
    _graft_robot_additions(reference.find("worldbody/body[@name='base']"), simulator.worldbody)
    add_task_elements(simulator.worldbody, task)
    return simulator, robot


class TwinWorld:
    """A franky-sim FR3 server on a loopback address, in a scene with a task's table and objects.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; a
    ``TwinWorld`` starts once. The arm is moved through franky
    (``franky.Robot(world.hostname, realtime_config=franky.RealtimeConfig.Ignore)``);
    :meth:`reset` places the objects as the sim env does for the same seed.

    :param task: ``"PickPlace"``, ``"Push"`` or ``"Stack"``.
    :param positions: ``"train"``, ``"unseen"`` or ``"all"`` object positions.
    :param image_size: side of the camera images in pixels, 16 to 1024.
    :param distractors: ``False`` parks the objects the task does not use out of view, as the sim env does.
    """

    def __init__(self, task: str = "PickPlace", positions: str = "train", image_size: int = DEFAULT_IMAGE_SIZE,
                 distractors: bool = True) -> None:
        self.task = get_task(task)
        self.positions = check_positions_mode(positions)
        self.image_size = check_image_size(image_size)
        self.distractors = check_flag("distractors", distractors)
        self._simulator, self._robot = build_twin_simulator(self.task, self.image_size)
        self._lock = threading.Lock()
        self._simulator.register_pre_step_callback(lambda _: self._lock.acquire())
        self._simulator.register_post_step_callback(lambda _: self._lock.release())
        self._server: SimulationServer | None = None
        self._rng: np.random.Generator | None = None
        self._render_thread: ThreadPoolExecutor | None = None
        self._renderer: mujoco.Renderer | None = None
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[:] = RENDER_GEOM_GROUPS
        self.colours: list[str] = []
        self.instruction = ""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> TwinWorld:
        """Compile the scene, bind the server to a free loopback address and start stepping.

        The gripper then answers a missed grasp as the Franka Hand does
        (:func:`report_missed_grasps_as_the_franka_hand_does`).
        """
        if self._simulator.is_initialized:
            raise RuntimeError("a TwinWorld starts once; make a new one")
        report_missed_grasps_as_the_franka_hand_does()
        self._simulator.init()
        self._server = SimulationServer(self._simulator)
        self._server.init()
        self._server.run_async()
        return self

    def stop(self) -> None:
        """Stop the server thread, close the renderer and free the simulator. Safe to call twice."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._render_thread is not None:
            self._render_thread.submit(self._close_renderer).result()
            self._render_thread.shutdown()
            self._render_thread = None
        if self._simulator.is_initialized and not self._simulator.is_cleaned_up:
            self._simulator.cleanup()

    def kill_server(self) -> None:
        """Fault rehearsal: the robot server dies, as if its process crashed or the cable was pulled.

        The physics thread stops and every client connection is closed; the
        scene stays readable and renderable. :meth:`stop` still frees the rest.
        """
        server = self._require_server()
        server.running = False
        if server.async_thread is not None:
            server.async_thread.join()
        for robot_server in server.robot_servers:
            robot_server.reset_state()
            if robot_server.gripper_server is not None:
                robot_server.gripper_server.reset_state()

    def __enter__(self) -> TwinWorld:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def hostname(self) -> str:
        """The loopback address franky connects to."""
        self._require_server()
        return self._robot.hostname

    @contextlib.contextmanager
    def physics(self) -> Iterator[tuple[mujoco.MjModel, mujoco.MjData]]:
        """Hold the step lock and give the MuJoCo model and data; no step runs meanwhile.

        :raises RuntimeError: if the twin is not running, or a step has not ended
            within :data:`LOCK_TIMEOUT` (the physics thread died in it).
        """
        self._require_server()
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):
            raise RuntimeError(f"the physics thread has not finished its step in {LOCK_TIMEOUT} s; it has died")
        try:
            yield self._simulator.model, self._simulator.data
        finally:
            self._lock.release()

    # ---------------------------------------------------------------- state
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Recolour and place the objects and the fixture as the sim env's reset does for ``seed``.

        The arm is not moved: the real env homes it through franky. As in
        Gymnasium, ``seed=None`` continues the generator of the last seeded reset.

        :return: ``{"instruction": str, "colours": list[str]}``.
        """
        self._require_server()
        if seed is not None or self._rng is None:
            self._rng, _ = seeding.np_random(seed)
        layout = sample_layout(self._rng, self.task, self.positions)
        with self.physics() as (model, data):
            apply_layout(model, data, self.task, layout, self.distractors)
        self.colours, self.instruction = list(layout.colours), layout.instruction
        return {"instruction": self.instruction, "colours": list(self.colours)}

    def reset_robot_state(self) -> None:
        """Put the arm at :data:`HOME_JOINT_POSITIONS` with the gripper open, for tests.

        franky drives the arm in normal use. franky-sim's server holds the joint
        configuration it last saw and has no public way to take a new one but
        resetting its session, so this drops the franky connection: connect a new
        ``franky.Robot`` afterwards. The server is paused meanwhile, then runs
        :data:`RESET_SETTLE_TICKS` ticks before it is back in real time.
        """
        server = self._require_server()
        server.running = False
        server.async_thread.join()
        try:
            model, data = self._simulator.model, self._simulator.data
            arm = self._qpos_addresses(ARM_JOINT_NAMES)
            fingers = self._qpos_addresses(FINGER_JOINT_NAMES)
            data.qpos[arm] = HOME_JOINT_POSITIONS
            data.qpos[fingers] = GRIPPER_MAX_WIDTH / 2
            data.qvel[self._dof_addresses(ARM_JOINT_NAMES + FINGER_JOINT_NAMES)] = 0.0
            mujoco.mj_forward(model, data)
            self._robot.set_hand_goal(GRIPPER_MAX_WIDTH, FRANKA_HAND_VELOCITY_LIMIT, OPEN_GRIPPER_FORCE)
            for robot_server in server.robot_servers:
                robot_server.reset_state()
            for _ in range(RESET_SETTLE_TICKS):
                server.run_once(realtime=False)
        finally:
            server.run_async()

    def scene_state(self) -> SceneState:
        """Object and fixture positions and the gripper opening, for the task's success check."""
        with self.physics() as (_, data):
            return SceneState(
                object_positions=np.array([data.body(f"obj{i}").xpos for i in range(N_OBJECTS)]),
                fixture_position=data.body("fixture").xpos.copy(),
                gripper_width=float(data.qpos[self._qpos_addresses(FINGER_JOINT_NAMES)].sum()),
            )

    def is_success(self) -> bool:
        """Whether the task is solved in the twin's current state."""
        return self.task.is_success(self.scene_state())

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m) and orientation quaternion (w, x, y, z) in the robot base frame."""
        quaternion = np.empty(4)
        with self.physics() as (_, data):
            site = data.site("tcp")
            mujoco.mju_mat2Quat(quaternion, site.xmat)
            return site.xpos.copy(), quaternion

    def sim_time(self) -> float:
        """The simulator's clock (s): it runs slower than the wall clock when the CPU is busy."""
        with self.physics() as (_, data):
            return float(data.time)

    # ------------------------------------------------------------- cameras
    def render(self, camera: str) -> np.ndarray:
        """An RGB ``uint8`` ``(image_size, image_size, 3)`` image from camera ``"front"`` or ``"wrist"``.

        Callable from any thread; images are drawn in the twin's render thread.
        """
        if camera not in CAMERAS:
            raise ValueError(f"camera={camera!r} is unknown; use one of {CAMERAS}")
        self._require_server()
        if self._render_thread is None:
            self._render_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-render")
        return self._render_thread.submit(self._draw, camera).result()

    def _draw(self, camera: str) -> np.ndarray:
        """Copy the scene under the step lock, then draw it (runs in the render thread)."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self._simulator.model, self.image_size, self.image_size)
        with self.physics() as (_, data):
            self._renderer.update_scene(data, camera=camera, scene_option=self._scene_option)
        return self._renderer.render()

    def _close_renderer(self) -> None:
        """Free the OpenGL context (runs in the render thread, which owns it)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -------------------------------------------------------------- helpers
    def _require_server(self) -> SimulationServer:
        if self._server is None:
            raise RuntimeError("the twin is not running; call start() or use it as a context manager")
        return self._server

    def _qpos_addresses(self, joint_names: tuple[str, ...]) -> list[int]:
        model = self._simulator.model
        return [int(model.joint(ROBOT_PREFIX + name).qposadr[0]) for name in joint_names]

    def _dof_addresses(self, joint_names: tuple[str, ...]) -> list[int]:
        model = self._simulator.model
        return [int(model.joint(ROBOT_PREFIX + name).dofadr[0]) for name in joint_names]


@dataclass
class Twin:
    """What stands in for the hardware on the twin: a running world and its cameras, streaming.

    Made by :func:`start_twin`; :meth:`close` stops it all. A real env given a
    twin (:class:`~corft_envs.real_env.FR3RealEnv`) owns it and closes it.

    :param world: the running world (:func:`start_twin` runs it in a process of its own,
        :class:`~corft_envs.twin_process.TwinWorldProcess`); franky connects to ``world.hostname``.
    :param virtual_cameras: ``{"front": ..., "wrist": ...}``, each a software RealSense streaming the
        world's renders of that camera; a :class:`~corft_robots.realsense.RealSenseCamera` reads
        ``virtual_cameras[name].device``.
    """

    world: TwinWorld | TwinWorldProcess
    virtual_cameras: dict[str, VirtualRealSense] = field(default_factory=dict)

    def close(self) -> None:
        """Stop the cameras' streaming, then the world. Safe to call twice."""
        try:
            for virtual in self.virtual_cameras.values():
                virtual.stop_streaming()
        finally:
            self.world.stop()


def start_twin(task: str = "PickPlace", positions: str = "train", image_size: int = DEFAULT_IMAGE_SIZE,
               distractors: bool = True) -> Twin:
    """Start a :class:`TwinWorld` in a process of its own (:class:`~corft_envs.twin_process.TwinWorldProcess`)
    and one virtual RealSense per camera streaming its renders at :data:`TWIN_CAMERA_FPS` (``image_size``
    square frames, serial numbers ``twin-front``, ``twin-wrist``).

    The arguments are :class:`TwinWorld`'s. If anything fails, what started is stopped.
    """
    world = TwinWorldProcess(task, positions, image_size, distractors).start()
    twin = Twin(world)
    try:
        for name in CAMERAS:
            virtual = VirtualRealSense(image_size, image_size, TWIN_CAMERA_FPS, serial_number=f"twin-{name}")
            twin.virtual_cameras[name] = virtual
            virtual.start_streaming(lambda name=name: (world.render(name), None))
    except BaseException:
        twin.close()
        raise
    return twin
