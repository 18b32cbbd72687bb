"""The tabletop tasks: objects, instructions, success checks.

Every task has three movable objects ``obj0``, ``obj1``, ``obj2`` whose colours
are drawn per episode from :data:`COLOURS`, so the instruction, not the object
index, tells which one matters. Roles are fixed by index: ``obj0`` is the object
to move; in ``Stack`` ``obj1`` is the one to stack on; the rest are distractors.

Success is checked on the simulator state (object poses, gripper opening); the
reward is sparse: 1 on the step where success first holds, which terminates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

#: Object colours, name -> RGBA.
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.10, 1.0),
    "green": (0.15, 0.70, 0.20, 1.0),
    "blue": (0.12, 0.30, 0.90, 1.0),
    "yellow": (0.95, 0.80, 0.10, 1.0),
}

N_OBJECTS = 3


@dataclass(frozen=True)
class SceneState:
    """What a success check reads from the simulator.

    :param object_positions: ``(N_OBJECTS, 3)`` centres of ``obj0..obj2`` (m).
    :param fixture_position: ``(3,)`` position of the bowl or target body (m).
    :param gripper_width: opening of the gripper (m).
    """

    object_positions: np.ndarray
    fixture_position: np.ndarray
    gripper_width: float


class Task(ABC):
    """A tabletop task: its objects, fixture, instruction family and success test."""

    #: Short name, also the env id's stem: ``corft/<name>-v0``.
    name: str
    #: Episode limit in control steps (10 Hz), used by the registration.
    max_episode_steps: int
    #: Half extents (m) of the movable boxes.
    object_half_size: tuple[float, float, float] = (0.02, 0.02, 0.02)
    #: Instruction templates; ``{a}`` is obj0's colour, ``{b}`` obj1's.
    templates: tuple[str, ...]
    #: Objects with a role (``obj0``, and ``obj1`` in Stack); the others are distractors.
    objects_in_play: int = 1
    #: Whether the fixture is placed anywhere on the table at reset (``Place``'s pad) instead of at
    #: its fixed spot (the bowl, the push target).
    fixture_anywhere: bool = False
    #: Whether the task picks its object up, so that which object the policy lifted first says whether it went
    #: for the named one (``info["first_lifted"]``); a pushed block is never meant to leave the table.
    lifts: bool = True

    def instruction(self, rng: np.random.Generator, colours: list[str]) -> str:
        """Draw an instruction from the family for the episode's colours."""
        template = self.templates[rng.integers(len(self.templates))]
        return template.format(a=colours[0], b=colours[1])

    @abstractmethod
    def add_fixture(self, worldbody: ET.Element) -> None:
        """Add the static ``fixture`` body (bowl, target, or an empty marker)."""

    @abstractmethod
    def is_success(self, state: SceneState) -> bool:
        """Whether the task is solved in ``state``."""


class PickPlace(Task):
    """Put the <colour> cube in the bowl."""

    name = "PickPlace"
    max_episode_steps = 150
    templates = (
        "put the {a} cube in the bowl",
        "place the {a} cube into the bowl",
        "pick up the {a} cube and drop it in the bowl",
    )
    #: Inner half width of the square bowl, wall height and floor thickness (m).
    bowl_inner_half = 0.06
    bowl_wall_height = 0.035
    bowl_floor = 0.006

    def add_fixture(self, worldbody: ET.Element) -> None:
        bowl = ET.SubElement(worldbody, "body", name="fixture", pos="0.5 0.16 0")
        rgba = "0.55 0.36 0.20 1"
        half, wall, height, floor = self.bowl_inner_half, 0.006, self.bowl_wall_height, self.bowl_floor
        outer = half + wall
        ET.SubElement(bowl, "geom", type="box", size=f"{outer} {outer} {floor / 2}",
                      pos=f"0 0 {floor / 2}", rgba=rgba)
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            size = (f"{wall / 2} {outer} {height / 2}" if sx else f"{outer} {wall / 2} {height / 2}")
            pos = f"{sx * (half + wall / 2)} {sy * (half + wall / 2)} {height / 2}"
            ET.SubElement(bowl, "geom", type="box", size=size, pos=pos, rgba=rgba)

    def is_success(self, state: SceneState) -> bool:
        cube = state.object_positions[0]
        inside = np.all(np.abs(cube[:2] - state.fixture_position[:2]) < self.bowl_inner_half)
        resting = cube[2] < self.bowl_floor + self.object_half_size[2] + 0.01
        return bool(inside and resting)


class Push(Task):
    """Push the <colour> block onto the target."""

    name = "Push"
    max_episode_steps = 150
    lifts = False
    object_half_size = (0.025, 0.025, 0.02)
    templates = (
        "push the {a} block onto the target",
        "slide the {a} block to the target",
        "push the {a} block onto the grey circle",
    )
    #: Radius of the drawn target, and the distance that counts as on it (m).
    target_radius = 0.05
    success_radius = 0.035

    def add_fixture(self, worldbody: ET.Element) -> None:
        target = ET.SubElement(worldbody, "body", name="fixture", pos="0.5 0.16 0")
        ET.SubElement(target, "geom", type="cylinder", size=f"{self.target_radius} 0.0005",
                      pos="0 0 0.0005", rgba="0.45 0.45 0.45 1", contype="0", conaffinity="0")

    def is_success(self, state: SceneState) -> bool:
        block = state.object_positions[0]
        distance = np.linalg.norm(block[:2] - state.fixture_position[:2])
        on_table = block[2] < self.object_half_size[2] + 0.01
        return bool(distance < self.success_radius and on_table)


class Stack(Task):
    """Stack the <colour> cube on the <colour> cube."""

    name = "Stack"
    max_episode_steps = 200
    objects_in_play = 2
    templates = (
        "stack the {a} cube on the {b} cube",
        "put the {a} cube on top of the {b} cube",
        "place the {a} cube onto the {b} cube",
    )
    #: Horizontal tolerance of the stack (m); the gripper must have let go.
    xy_tolerance = 0.02
    released_width = 0.05

    def add_fixture(self, worldbody: ET.Element) -> None:
        # Stack has no fixture; an empty body keeps the scene layout uniform.
        ET.SubElement(worldbody, "body", name="fixture", pos="0.5 0.16 0")

    def is_success(self, state: SceneState) -> bool:
        top, base = state.object_positions[0], state.object_positions[1]
        aligned = np.linalg.norm(top[:2] - base[:2]) < self.xy_tolerance
        height = top[2] - base[2]
        on_top = abs(height - 2 * self.object_half_size[2]) < 0.008
        return bool(aligned and on_top and state.gripper_width > self.released_width)


class Lift(Task):
    """Pick up the <colour> cube: the skill under PickPlace and Stack, for pretraining a base policy.

    Not one of the fine-tuning targets: it teaches which cube a colour word names, and how to grasp a
    cube anywhere on the table, without the bowl or the stacking that the target tasks add.
    """

    name = "Lift"
    max_episode_steps = 100
    templates = (
        "pick up the {a} cube",
        "lift the {a} cube",
        "grasp the {a} cube and lift it",
    )
    #: Height of the cube's centre above its resting height that counts as lifted (m).
    lift_height = 0.06

    def add_fixture(self, worldbody: ET.Element) -> None:
        # Lift has no fixture; an empty body keeps the scene layout uniform.
        ET.SubElement(worldbody, "body", name="fixture", pos="0.5 0.16 0")

    def is_success(self, state: SceneState) -> bool:
        return bool(state.object_positions[0][2] > self.object_half_size[2] + self.lift_height)


class Place(Task):
    """Put the <colour> cube on the white square: carrying a cube to a target seen anywhere, for pretraining.

    Not one of the fine-tuning targets: the square is a flat pad drawn anywhere on the table at each
    reset (:attr:`fixture_anywhere`), so the task teaches grasping a cube anywhere and carrying it to a
    place the camera shows, never the bowl (PickPlace), a push (Push) or another cube (Stack).
    """

    name = "Place"
    max_episode_steps = 150
    templates = (
        "put the {a} cube on the white square",
        "place the {a} cube onto the square",
        "move the {a} cube to the white pad",
    )
    fixture_anywhere = True
    #: Half side of the drawn square, and how far from its centre the cube may rest (m).
    pad_half = 0.045
    success_distance = 0.035
    #: The gripper must have let go: wider than the cube (m), as in Stack.
    released_width = 0.05

    def add_fixture(self, worldbody: ET.Element) -> None:
        pad = ET.SubElement(worldbody, "body", name="fixture", pos="0.5 0.16 0")
        ET.SubElement(pad, "geom", type="box", size=f"{self.pad_half} {self.pad_half} 0.0005",
                      pos="0 0 0.0005", rgba="0.95 0.95 0.95 1", contype="0", conaffinity="0")

    def is_success(self, state: SceneState) -> bool:
        cube = state.object_positions[0]
        on_pad = np.linalg.norm(cube[:2] - state.fixture_position[:2]) < self.success_distance
        resting = cube[2] < self.object_half_size[2] + 0.01
        return bool(on_pad and resting and state.gripper_width > self.released_width)


#: The fine-tuning targets (few-shot data, the study's rows).
TARGET_TASKS = ("PickPlace", "Push", "Stack")
#: What a base policy is pretrained on by default (``corft pretrain``): never a target.
PRETRAIN_TASKS = ("Lift", "Place")
TASKS: dict[str, Task] = {task.name: task for task in (PickPlace(), Push(), Stack(), Lift(), Place())}


def get_task(name: str) -> Task:
    """Look a task up by name, with an error listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task={name!r} is unknown; use one of {', '.join(sorted(TASKS))}") from None
