"""Scripted demonstrators that act like a human teleoperator.

Each task has a script: a generator of sub-goals (reach a point with the
gripper open or closed, hold for some steps, re-read the scene) that reads the
simulator's privileged state (object positions). A :class:`ScriptedExpert`
turns sub-goals into actions of the env's contract and adds what makes
teleoperation different from an optimal controller, drawn from a seeded
generator per episode (see :class:`TeleopStyle`): a random top speed, pauses,
jitter on every command, and now and then a grasp placed beside the object,
which the script notices after lifting and retries. Demos therefore succeed
but are not time-optimal, which is what lets offline RL shorten cycle time.

``act(obs)`` is closed-loop, one action per step. ``act_chunk(obs, H)`` plans
up to H actions open-loop from the current state, predicting the TCP from its
own commands; it ends a chunk early where the script needs a fresh look at the
scene (after a grasp, between pushes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from corft_envs.controller import rotvec_between
from corft_envs.tasks import SceneState, Task
from corft_robots.contract import MAX_ROTATION, MAX_TRANSLATION, WORKSPACE


@runtime_checkable
class PrivilegedScene(Protocol):
    """What a scripted expert reads: the sim env, or the real env on its twin."""

    task: Task

    def scene_state(self) -> SceneState:
        """Object and fixture positions and the gripper opening."""

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m) and orientation quaternion (w x y z)."""


def privileged_scene(env: gym.Env) -> PrivilegedScene:
    """What a scripted expert reads: ``env.unwrapped``, or its twin (the real env's ``world``).

    :raises TypeError: saying why not, if neither gives the scene's true state.
    """
    scene = getattr(env.unwrapped, "world", None) or env.unwrapped
    if not isinstance(scene, PrivilegedScene):
        raise TypeError(
            f"scripted experts read the scene's true state, which {type(scene).__name__} does not give: "
            "use a sim env, or the real env on its twin (robot_host='twin'); on hardware, collect by teleop"
        )
    return scene


@dataclass(frozen=True)
class TeleopStyle:
    """Knobs of the demonstrator's human-like imperfection.

    :param speed_range: the episode's top speed, drawn uniformly, as a fraction
        of ``MAX_TRANSLATION`` per step.
    :param pause_probability: chance per moving step that the operator pauses.
    :param pause_steps: inclusive range of a pause's length in steps.
    :param jitter: standard deviation of the noise on translation commands
        (action units, i.e. a fraction of ``MAX_TRANSLATION``).
    :param missed_grasp_probability: chance that the first grasp of an
        object is placed :attr:`missed_grasp_offset` beside it.
    :param missed_grasp_offset: that offset (m), across the fingers' closing direction.
    :param tolerance: distance (m) at which a waypoint counts as reached.
    """

    speed_range: tuple[float, float] = (0.45, 0.8)
    pause_probability: float = 0.03
    pause_steps: tuple[int, int] = (2, 6)
    jitter: float = 0.08
    missed_grasp_probability: float = 0.15
    missed_grasp_offset: float = 0.045
    tolerance: float = 0.008


@dataclass
class Reach:
    """Move the TCP to ``position`` with the gripper closed or open."""

    position: np.ndarray
    close_gripper: bool
    tolerance: float | None = None


@dataclass
class Hold:
    """Stay in place for ``steps`` steps with the gripper closed or open."""

    steps: int
    close_gripper: bool


class Refresh:
    """The script reads the scene next: in chunk mode the chunk ends here."""


SubGoal = Reach | Hold | Refresh
Script = Generator[SubGoal, None, None]

#: Height of approach waypoints above an object's centre, and of lifts (m).
APPROACH_HEIGHT = 0.10
LIFT_HEIGHT = 0.12
#: An object counts as grasped if lifting raised it by this much (m).
GRASPED_RISE = 0.03
MAX_GRASP_ATTEMPTS = 4
#: Proportional gain from remaining distance to commanded speed.
POSITION_GAIN = 1.0


class ScriptedExpert(ABC):
    """Base demonstrator: runs a task script through human-like teleoperation.

    :param env: the env (any wrapping of one whose scene it can read, see :class:`PrivilegedScene`).
    :param style: the imperfection knobs.
    """

    def __init__(self, env: gym.Env, style: TeleopStyle | None = None) -> None:
        self.sim = privileged_scene(env)
        self.style = style or TeleopStyle()
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start a new episode (call after ``env.reset``); ``seed`` fixes the operator's behaviour."""
        self.rng = np.random.default_rng(seed)
        self.speed = float(self.rng.uniform(*self.style.speed_range))
        self._home_quat = self.sim.tcp_pose()[1]
        self._script = self.script()
        self._goal: SubGoal | None = None
        self._hold_left = 0
        self._pause_left = 0
        self._closed = False
        self._tcp = self.sim.tcp_pose()[0]

    def act(self, observation: dict) -> np.ndarray:
        """One action, closed-loop from the current state."""
        return self.act_chunk(observation, 1)[0]

    def act_chunk(self, observation: dict, chunk_size: int) -> np.ndarray:
        """Up to ``chunk_size`` actions planned open-loop; shape ``(k, 7)``, ``1 <= k <= chunk_size``."""
        self._tcp = np.asarray(observation["state"][:3], dtype=np.float64)
        quat = np.asarray(observation["state"][3:7], dtype=np.float64)
        actions = []
        fresh = True
        while len(actions) < chunk_size:
            goal = self._current_goal(fresh)
            if goal is None:  # a Refresh with stale state: end the chunk here
                break
            fresh = False
            action = self._action_for(goal)
            if not actions:
                action[3:6] = np.clip(rotvec_between(quat, self._home_quat) / MAX_ROTATION, -1, 1)
            actions.append(action)
        return np.asarray(actions, dtype=np.float32)

    # --------------------------------------------------------------- scripts
    @abstractmethod
    def script(self) -> Script:
        """The task's sub-goals, read lazily as the episode goes."""

    def object_position(self, index: int) -> np.ndarray:
        """Centre of ``obj{index}`` (m), read from the simulator."""
        return self.sim.scene_state().object_positions[index].copy()

    def fixture_position(self) -> np.ndarray:
        """Position of the fixture body (bowl, target) (m)."""
        return self.sim.scene_state().fixture_position.copy()

    def grasp(self, index: int) -> Generator[SubGoal, None, bool]:
        """Pick ``obj{index}`` up, retrying missed grasps; returns whether it is held."""
        for attempt in range(MAX_GRASP_ATTEMPTS):
            start = self.object_position(index)
            target = start.copy()
            if attempt == 0 and self.rng.random() < self.style.missed_grasp_probability:
                target[1] += self.rng.choice([-1.0, 1.0]) * self.style.missed_grasp_offset
            target[2] = max(start[2] - 0.005, 0.012)
            yield Reach(target + [0, 0, APPROACH_HEIGHT], False)
            yield Reach(target, False, tolerance=0.005)
            yield Hold(4, True)
            yield Reach(target + [0, 0, LIFT_HEIGHT], True)
            yield Refresh()
            if self.object_position(index)[2] > start[2] + GRASPED_RISE:
                return True
            yield Hold(3, False)
        return False

    # ------------------------------------------------------------- internals
    def _current_goal(self, fresh: bool) -> SubGoal | None:
        while True:
            if self._goal is None:
                self._goal = next(self._script, None)
                if self._goal is None:  # script finished: hold still
                    self._goal = Hold(1_000_000, self._closed)
                if isinstance(self._goal, Hold):
                    self._hold_left = self._goal.steps
            goal = self._goal
            if isinstance(goal, Refresh):
                if not fresh:
                    return None
                self._goal = None
            elif isinstance(goal, Hold) and self._hold_left <= 0:
                self._goal = None
            elif isinstance(goal, Reach) and self._reached(goal):
                self._goal = None
            else:
                return goal

    def _reached(self, goal: Reach) -> bool:
        tolerance = goal.tolerance or self.style.tolerance
        return bool(np.linalg.norm(self._clipped(goal.position) - self._tcp) < tolerance)

    @staticmethod
    def _clipped(position: np.ndarray) -> np.ndarray:
        return np.clip(position, *WORKSPACE)

    def _action_for(self, goal: SubGoal) -> np.ndarray:
        action = np.zeros(7)
        if isinstance(goal, Hold):
            self._hold_left -= 1
            self._closed = goal.close_gripper
        elif self._pause_left > 0:
            self._pause_left -= 1
        elif self.rng.random() < self.style.pause_probability:
            self._pause_left = int(self.rng.integers(self.style.pause_steps[0], self.style.pause_steps[1] + 1)) - 1
        else:
            self._closed = goal.close_gripper
            error = self._clipped(goal.position) - self._tcp
            distance = np.linalg.norm(error)
            speed = min(self.speed, POSITION_GAIN * distance / MAX_TRANSLATION)
            move = error / max(distance, 1e-9) * speed
            move += self.rng.normal(0.0, self.style.jitter, size=3) * min(1.0, speed / 0.2)
            action[:3] = np.clip(move, -1.0, 1.0)
            self._tcp = self._clipped(self._tcp + action[:3] * MAX_TRANSLATION)
        action[6] = 1.0 if self._closed else -1.0
        return action


class PickPlaceExpert(ScriptedExpert):
    """Grasp the named cube, carry it over the bowl, lower it and let go."""

    def script(self) -> Script:
        if not (yield from self.grasp(0)):
            return
        bowl = self.fixture_position()
        yield Reach(np.array([bowl[0], bowl[1], LIFT_HEIGHT]), True)
        yield Reach(np.array([bowl[0], bowl[1], 0.07]), True)
        yield Hold(3, False)
        yield Reach(np.array([bowl[0], bowl[1], LIFT_HEIGHT]), False)


class StackExpert(ScriptedExpert):
    """Grasp the first named cube and set it down on the second."""

    def script(self) -> Script:
        if not (yield from self.grasp(0)):
            return
        base = self.object_position(1)
        cube_height = 2 * self.sim.task.object_half_size[2]
        yield Reach(base + [0, 0, LIFT_HEIGHT], True)
        yield Reach(base + [0, 0, cube_height + 0.012], True, tolerance=0.005)
        yield Hold(3, False)
        yield Reach(base + [0, 0, LIFT_HEIGHT], False)


class PushExpert(ScriptedExpert):
    """Push the named block to the target in short strokes, re-aiming between them.

    Each stroke starts behind the block on the line from the target through
    it, with the gripper closed at table height, and pushes
    :data:`STROKE_LENGTH` towards the target; if the TCP is not already behind
    the block it lifts, goes over and comes down behind it.
    """

    STROKE_LENGTH = 0.06
    PUSH_HEIGHT = 0.018
    MAX_STROKES = 25

    def script(self) -> Script:
        half = self.sim.task.object_half_size[0]
        stand_off = half + 0.02
        for _ in range(self.MAX_STROKES):
            block, goal = self.object_position(0), self.fixture_position()
            offset = goal[:2] - block[:2]
            remaining = float(np.linalg.norm(offset))
            if remaining < 0.01:
                break
            direction = np.append(offset / remaining, 0.0)
            behind = np.array([*(block[:2] - direction[:2] * stand_off), self.PUSH_HEIGHT])
            tcp = self.sim.tcp_pose()[0]
            lined_up = np.linalg.norm(tcp[:2] - behind[:2]) < 0.015 and tcp[2] < 0.05
            if not lined_up:
                yield Reach(np.array([*tcp[:2], APPROACH_HEIGHT]), True)
                yield Reach(behind + [0, 0, APPROACH_HEIGHT], True)
                yield Reach(behind, True, tolerance=0.006)
            stroke = min(self.STROKE_LENGTH, remaining)
            yield Reach(behind + direction * stroke, True, tolerance=0.006)
            yield Refresh()
        yield Reach(self.sim.tcp_pose()[0] + [0, 0, 0.05], True)


class LiftExpert(ScriptedExpert):
    """Grasp the named cube and lift it (the grasp's own lift ends the episode with success)."""

    def script(self) -> Script:
        if (yield from self.grasp(0)):
            yield Hold(3, True)


class PlaceExpert(ScriptedExpert):
    """Grasp the named cube, carry it over the pad, set it down on the table and let go."""

    #: TCP height at which the held cube touches the table (m).
    SET_DOWN_HEIGHT = 0.02

    def script(self) -> Script:
        if not (yield from self.grasp(0)):
            return
        pad = self.fixture_position()
        yield Reach(np.array([pad[0], pad[1], LIFT_HEIGHT]), True)
        yield Reach(np.array([pad[0], pad[1], self.SET_DOWN_HEIGHT]), True, tolerance=0.005)
        yield Hold(3, False)
        yield Reach(np.array([pad[0], pad[1], LIFT_HEIGHT]), False)


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "PickPlace": PickPlaceExpert,
    "Push": PushExpert,
    "Stack": StackExpert,
    "Lift": LiftExpert,
    "Place": PlaceExpert,
}


def make_expert(env: gym.Env, style: TeleopStyle | None = None) -> ScriptedExpert:
    """The scripted demonstrator for ``env``'s task."""
    return EXPERTS[privileged_scene(env).task.name](env, style)
