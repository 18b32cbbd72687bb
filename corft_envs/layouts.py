"""Where objects go at reset: demonstrated (``train``) and ``unseen`` positions.

Real demonstrations are collected with objects at a handful of marked spots on
the table. ``train`` reproduces that: every movable object sits on one of
:data:`TRAIN_SPOTS` (distinct spots per object), jittered by at most
:data:`SPOT_JITTER` in x and y. ``unseen`` samples every movable object
uniformly in :data:`OBJECT_REGION` at least :data:`UNSEEN_CLEARANCE` away from
every train spot, so no unseen position is within a demonstrated one's
neighbourhood; the region includes both the gaps between the spots
(interpolation) and its borders (extrapolation). ``all`` samples uniformly in
the region, spots included. All positions are in the robot base frame (m);
objects are always at least :data:`MIN_SEPARATION` apart.

Fixtures (the bowl, the push target) stay at :data:`FIXTURE_SPOT` with the same
jitter in every mode: the generalisation study varies object positions. A task
whose fixture goes anywhere (``Place``'s pad, for pretraining) draws it
uniformly in :data:`FIXTURE_REGION`, clear of every object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from corft_envs.tasks import COLOURS, N_OBJECTS, Task

PositionsMode = Literal["train", "unseen", "all"]
POSITION_MODES: tuple[str, ...] = ("train", "unseen", "all")

#: x range, y range of the area movable objects are placed in (m).
OBJECT_REGION = ((0.34, 0.64), (-0.24, 0.04))
#: The marked spots demonstrations use, (x, y) in m.
TRAIN_SPOTS = np.array([(0.43, -0.15), (0.43, -0.03), (0.55, -0.15), (0.55, -0.03)])
#: Uniform jitter (+-, m) around a spot, in x and y.
SPOT_JITTER = 0.01
#: Minimum distance of an unseen position from every train spot's centre (m).
UNSEEN_CLEARANCE = 0.05
#: Minimum distance between two movable objects' centres (m).
MIN_SEPARATION = 0.07
#: Where the bowl or push target stands (m).
FIXTURE_SPOT = np.array([0.50, 0.16])
#: x range, y range of a fixture placed anywhere (m): the object region and the bowl's side of the table.
FIXTURE_REGION = ((0.36, 0.62), (-0.22, 0.20))
#: Minimum distance of a fixture placed anywhere from every object's centre (m).
FIXTURE_CLEARANCE = 0.09

_MAX_REJECTION_TRIES = 10_000


def check_positions_mode(positions: str) -> PositionsMode:
    """Return ``positions`` if it is a known mode, else raise a ``ValueError`` naming the choices."""
    if positions not in POSITION_MODES:
        raise ValueError(
            f"positions={positions!r} is not supported; use one of {', '.join(map(repr, POSITION_MODES))}"
        )
    return positions  # type: ignore[return-value]


def is_unseen(xy: np.ndarray) -> bool:
    """True if ``xy`` is at least :data:`UNSEEN_CLEARANCE` from every train spot."""
    return bool(np.min(np.linalg.norm(TRAIN_SPOTS - np.asarray(xy), axis=1)) >= UNSEEN_CLEARANCE)


def sample_object_positions(
    rng: np.random.Generator, count: int, positions: PositionsMode
) -> np.ndarray:
    """Sample ``count`` object positions (x, y) for the given mode.

    :param rng: the environment's random generator (``env.np_random``).
    :param count: number of movable objects, at most ``len(TRAIN_SPOTS)``.
    :param positions: ``"train"``, ``"unseen"`` or ``"all"`` (see module docstring).
    :return: array of shape ``(count, 2)``.
    """
    check_positions_mode(positions)
    if positions == "train":
        if count > len(TRAIN_SPOTS):
            raise ValueError(f"{count} objects need more than the {len(TRAIN_SPOTS)} train spots")
        spots = TRAIN_SPOTS[rng.choice(len(TRAIN_SPOTS), size=count, replace=False)]
        return spots + rng.uniform(-SPOT_JITTER, SPOT_JITTER, size=spots.shape)

    low = np.array([OBJECT_REGION[0][0], OBJECT_REGION[1][0]])
    high = np.array([OBJECT_REGION[0][1], OBJECT_REGION[1][1]])
    placed: list[np.ndarray] = []
    for _ in range(_MAX_REJECTION_TRIES):
        xy = rng.uniform(low, high)
        if positions == "unseen" and not is_unseen(xy):
            continue
        if any(np.linalg.norm(xy - other) < MIN_SEPARATION for other in placed):
            continue
        placed.append(xy)
        if len(placed) == count:
            return np.array(placed)
    raise RuntimeError(f"could not place {count} objects in mode {positions!r}")


def sample_fixture_position(rng: np.random.Generator, task: Task, object_xy: np.ndarray) -> np.ndarray:
    """The fixture's (x, y).

    :data:`FIXTURE_SPOT` jittered by :data:`SPOT_JITTER`; for a task with ``fixture_anywhere``,
    uniform in :data:`FIXTURE_REGION` at least :data:`FIXTURE_CLEARANCE` from every object in ``object_xy``.
    """
    if not task.fixture_anywhere:
        return FIXTURE_SPOT + rng.uniform(-SPOT_JITTER, SPOT_JITTER, size=2)
    low = np.array([FIXTURE_REGION[0][0], FIXTURE_REGION[1][0]])
    high = np.array([FIXTURE_REGION[0][1], FIXTURE_REGION[1][1]])
    for _ in range(_MAX_REJECTION_TRIES):
        xy = rng.uniform(low, high)
        if np.min(np.linalg.norm(object_xy - xy, axis=1)) >= FIXTURE_CLEARANCE:
            return xy
    raise RuntimeError(f"could not place {task.name}'s fixture clear of the objects")


@dataclass(frozen=True)
class EpisodeLayout:
    """What a reset draws: object colours, positions, the fixture's position and the instruction.

    :param colours: colour names of ``obj0..obj2``.
    :param object_xy: ``(N_OBJECTS, 2)`` object positions on the table (m).
    :param fixture_xy: ``(2,)`` position of the fixture (m).
    :param instruction: the language instruction.
    """

    colours: list[str]
    object_xy: np.ndarray
    fixture_xy: np.ndarray
    instruction: str


def sample_layout(rng: np.random.Generator, task: Task, positions: PositionsMode) -> EpisodeLayout:
    """Draw an episode's layout: colours, object and fixture positions, instruction.

    The sim env and the twin both reset with it, so the same seed gives the same scene.
    """
    palette = list(COLOURS)
    colours = [palette[i] for i in rng.permutation(len(palette))[:N_OBJECTS]]
    object_xy = sample_object_positions(rng, N_OBJECTS, positions)
    fixture_xy = sample_fixture_position(rng, task, object_xy)
    return EpisodeLayout(colours, object_xy, fixture_xy, task.instruction(rng, colours))
