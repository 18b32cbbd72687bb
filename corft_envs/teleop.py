"""Keyboard teleoperation of the real env (or its twin): key presses in, actions of the contract out.

:class:`KeyboardTeleop` polls a :class:`~corft_envs.keyboard.KeySource` once
per control step. Each press of a motion key (:data:`MOTION_KEYS`) adds
``press_step`` (in action units) to one dimension of that step's action, so a
held key, repeated by the terminal, moves the TCP steadily; no key, no motion.
Space toggles the gripper. Enter labels the episode a success and Backspace a
failure (:meth:`~corft_envs.real_env.FR3RealEnv.label_episode`); the env ends
it on the next step. It is a policy for :func:`~corft_envs.collection.collect`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from corft_envs.keyboard import SUCCESS_KEYS, KeySource, episode_label
from corft_robots.contract import ACTION_DIM

#: Motion keys: key -> (action dimension, sign). Translation in the base frame, then rotation.
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0),   # x: away from / towards the robot base
    "a": (1, 1.0), "d": (1, -1.0),   # y: left / right, seen from behind the robot
    "r": (2, 1.0), "f": (2, -1.0),   # z: up / down
    "i": (3, 1.0), "k": (3, -1.0),   # rotation about x
    "j": (4, 1.0), "l": (4, -1.0),   # rotation about y
    "u": (5, 1.0), "o": (5, -1.0),   # rotation about z
}
GRIPPER_KEY = " "
#: What the operator reads before starting.
KEY_HELP = (
    "keys: w/s x+/x-, a/d y+/y-, r/f up/down, i/k j/l u/o rotate about x/y/z, space grasp/open, "
    "Enter = success (ends the episode), Backspace = failure, Ctrl-C stops the arm and quits"
)


class KeyboardTeleop:
    """A policy that turns the operator's key presses into actions, one per control step.

    :param env: the env to act in (any wrapping of one with ``label_episode``, the real env).
    :param keys: where the key presses come from.
    :param press_step: action units one key press adds (0.2 = 1 cm or 0.05 rad per step).
    :param confirm_start: wait for Enter before each episode, once the operator has
        set the scene up; default: on hardware, not on the twin (which places its objects).
    :raises TypeError: if the env cannot take the operator's labels.
    """

    def __init__(self, env: gym.Env, keys: KeySource, press_step: float = 0.2,
                 confirm_start: bool | None = None) -> None:
        if not callable(getattr(env.unwrapped, "label_episode", None)):
            raise TypeError(
                f"keyboard teleoperation labels episodes, which {type(env.unwrapped).__name__} cannot take: "
                "use a real env, e.g. corft/FR3Real-PickPlace-v0 (robot_host='twin' to rehearse)"
            )
        if not 0.0 < press_step <= 1.0:
            raise ValueError(f"press_step must be in (0, 1] action units, got {press_step}")
        self.env = env.unwrapped
        self.keys = keys
        self.press_step = float(press_step)
        self.confirm_start = not getattr(self.env, "on_twin", False) if confirm_start is None else confirm_start
        self.gripper_closed = False

    def reset(self, seed: int) -> None:
        """Start an episode (the env has just reset, gripper open); with ``confirm_start``, wait for Enter."""
        self.gripper_closed = False
        if self.confirm_start:
            self.keys.wait_for(SUCCESS_KEYS, f"next episode: '{self.env.instruction}'. Set the scene up, "
                                             "then press Enter to start")

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The action for the keys pressed since the last step; a label key labels the episode."""
        pressed = self.keys.poll()
        action = np.zeros(ACTION_DIM, dtype=np.float32)
        for key in pressed:
            if key in MOTION_KEYS:
                dim, sign = MOTION_KEYS[key]
                action[dim] += sign * self.press_step
            elif key == GRIPPER_KEY:
                self.gripper_closed = not self.gripper_closed
        label = episode_label(pressed)
        if label is not None:
            self.env.label_episode(label)
        action[:6] = np.clip(action[:6], -1.0, 1.0)
        action[6] = 1.0 if self.gripper_closed else -1.0
        return action

    def act_chunk(self, observation: dict[str, np.ndarray], horizon: int) -> np.ndarray:
        """One action as a chunk: a teleoperator acts step by step."""
        return self.act(observation)[None]
