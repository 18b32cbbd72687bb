"""The safety layer, against hand-computed cases (pure logic, no robot)."""

import numpy as np
import pytest

from corft_robots.contract import MAX_ROTATION, MAX_TRANSLATION, WORKSPACE
from corft_robots.safety import SafetyChecker, SafetyLimits, SafetyViolation


def chunk(*rows: list[float]) -> np.ndarray:
    """A chunk from rows of up to 7 values, the rest zero (gripper open)."""
    actions = np.zeros((len(rows), 7))
    actions[:, 6] = -1.0
    for step, row in enumerate(rows):
        actions[step, : len(row)] = row
    return actions


def check(actions: np.ndarray, position=(0.5, 0.0, 0.3), previous=None, **limits):
    return SafetyChecker(SafetyLimits(**limits)).check_chunk(actions, np.array(position), previous)


def test_defaults_are_the_sim_contract():
    limits = SafetyLimits()
    np.testing.assert_array_equal(limits.workspace[0], WORKSPACE[0])
    np.testing.assert_array_equal(limits.workspace[1], WORKSPACE[1])
    assert limits.max_translation == MAX_TRANSLATION and limits.max_rotation == MAX_ROTATION
    assert 0 < limits.max_action_jump < 2 and 0 <= limits.clip_margin < 0.5
    assert limits.gripper_min_width == 0.0 and limits.gripper_max_width == 0.08


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_translation": 0.06}, "max_translation"),
        ({"max_translation": 0.0}, "max_translation"),
        ({"max_rotation": float("nan")}, "max_rotation"),
        ({"max_action_jump": 2.5}, "max_action_jump"),
        ({"clip_margin": -0.1}, "clip_margin"),
        ({"workspace_low": (0.3, 0.0, 0.0), "workspace_high": (0.2, 0.1, 0.1)}, "below"),
        ({"workspace_low": (0.3, 0.0)}, "3 finite"),
        ({"gripper_max_width": 0.1}, "gripper_max_width"),
        ({"gripper_min_width": 0.08}, "gripper_min_width"),
        ({"max_grasp_force": 100.0}, "max_grasp_force"),
        ({"max_chunk_length": 0}, "max_chunk_length"),
        ({"max_chunk_length": 2.5}, "max_chunk_length"),
    ],
)
def test_invalid_limits_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits(**kwargs)


def test_a_valid_chunk_is_decoded_and_its_positions_predicted():
    checked = check(chunk([0.5, 0, 0, 0, 0, 0, 1], [0, -1, 0, 0, 0, 0.4, -1]))
    np.testing.assert_allclose(checked.actions[0], [0.5, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(checked.commands[0].translation, [0.025, 0, 0])
    np.testing.assert_allclose(checked.commands[1].translation, [0, -0.05, 0])
    np.testing.assert_allclose(checked.commands[1].rotation, [0, 0, 0.1])
    assert checked.commands[0].close_gripper and not checked.commands[1].close_gripper
    np.testing.assert_allclose(checked.predicted_positions, [[0.525, 0, 0.3], [0.525, -0.05, 0.3]])
    assert checked.clipped_steps == () and checked.scaled_steps == ()


def test_clip_policy_clips_within_the_margin_and_rejects_beyond():
    checked = check(chunk([0.2], [1.04, 0, -1.03, 0, 0, 0, 1.05]))
    np.testing.assert_allclose(checked.actions[1], [1, 0, -1, 0, 0, 0, 1])
    assert checked.clipped_steps == (1,)
    with pytest.raises(SafetyViolation, match=r"step 1, dz \(action\[2\]\) is -1.06"):
        check(chunk([0.2], [0, 0, -1.06]))
    with pytest.raises(SafetyViolation, match="step 0, gripper"):
        check(chunk([0, 0, 0, 0, 0, 0, 3.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_naming_the_step(bad):
    actions = chunk([0.1], [0.1], [0.1, 0, 0, 0, bad])
    with pytest.raises(SafetyViolation, match=r"step 2, ry \(action\[4\]\) is .*must be finite"):
        check(actions)


@pytest.mark.parametrize("shape", [(7,), (3, 6), (0, 7), (21, 7), (2, 3, 7)])
def test_wrong_shapes_are_rejected(shape):
    with pytest.raises(SafetyViolation, match="shape"):
        check(np.zeros(shape))


def test_chunk_length_limit_is_configurable():
    assert len(check(np.zeros((5, 7)), max_chunk_length=5).actions) == 5
    with pytest.raises(SafetyViolation, match="max_chunk_length=4"):
        check(np.zeros((5, 7)), max_chunk_length=4)


def test_jump_between_consecutive_actions():
    # -0.25 -> 1.0 is a jump of exactly 1.25: allowed; -0.6 -> 0.7 (1.3) is not.
    check(chunk([-0.25], [1.0]))
    with pytest.raises(SafetyViolation, match=r"step 2, dy jumps by 1.300 from step 1 \(-0.600 -> 0.700\)"):
        check(chunk([0, 0], [0, -0.6], [0, 0.7]))
    with pytest.raises(SafetyViolation, match="step 1, rz jumps"):
        check(chunk([0, 0, 0, 0, 0, 0.5], [0, 0, 0, 0, 0, -0.9]))


def test_gripper_flips_are_not_jumps():
    checked = check(chunk([0, 0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, -1]))
    assert [c.close_gripper for c in checked.commands] == [False, True, False]


def test_jump_from_the_last_action_sent():
    previous = np.array([0.8, 0, 0, 0, 0, 0, -1])
    check(chunk([0.0]), previous=previous)
    with pytest.raises(SafetyViolation, match=r"step 0, dx jumps by 1.400 from the last action sent"):
        check(chunk([-0.6]), previous=previous)
    check(chunk([-0.6]), previous=None)


def test_per_step_limits_scale_keeping_direction():
    checked = check(chunk([1, 0.5, 0, 0, -1, 0.5]), max_translation=0.02, max_rotation=0.1)
    # translation (0.05, 0.025, 0) scaled by 0.4; rotation (0, -0.25, 0.125) scaled by 0.4
    np.testing.assert_allclose(checked.commands[0].translation, [0.02, 0.01, 0])
    np.testing.assert_allclose(checked.commands[0].rotation, [0, -0.1, 0.05])
    assert checked.scaled_steps == (0,)
    np.testing.assert_allclose(checked.actions[0][:3], [1, 0.5, 0])  # the action itself is unchanged


def test_workspace_prediction_rejects_the_whole_chunk_naming_step_and_axis():
    # from z = 0.1: step 0 -> 0.05, step 1 -> 0.0 (5 mm below the 0.005 floor: clipped to it), step 2 -> -0.045
    with pytest.raises(SafetyViolation, match=r"step 2 would take the TCP to z = -0.0450 m, below the lower "
                                              r"workspace bound 0.0050 m by more than workspace_clip_margin=0.02 m"):
        check(chunk([0, 0, -1], [0, 0, -1], [0, 0, -1]), position=(0.5, 0.0, 0.1))
    # y from 0.35: step 0 reaches the bound 0.40 exactly (allowed), step 1 goes to 0.45
    with pytest.raises(SafetyViolation, match=r"step 1 would take the TCP to y = 0.4500 m, above the upper"):
        check(chunk([0, 1], [0, 1]), position=(0.5, 0.35, 0.3))
    checked = check(chunk([0, 1]), position=(0.5, 0.35, 0.3))
    np.testing.assert_allclose(checked.predicted_positions, [[0.5, 0.40, 0.3]])
    # with no clip margin, step 1's 5 mm past the floor already rejects the chunk
    with pytest.raises(SafetyViolation, match=r"step 1 would take the TCP to z = 0.0000 m"):
        check(chunk([0, 0, -1], [0, 0, -1]), position=(0.5, 0.0, 0.1), workspace_clip_margin=0.0)


def test_targets_just_past_the_workspace_are_clipped_as_in_the_simulator():
    # from z = 0.1: 0.05, then 0.0 clipped to the floor 0.005, then -0.01 (1.5 cm below) clipped again
    checked = check(chunk([0, 0, -1], [0, 0, -1], [0, 0, -0.3]), position=(0.5, 0.0, 0.1))
    np.testing.assert_allclose(checked.predicted_positions[:, 2], [0.05, 0.005, 0.005])
    # the arm braked to z = 0.0025, 2.5 mm below the floor: holding still or pressing down 5 mm both target the floor
    held = check(chunk([0, 0, 0], [0, 0, -0.1]), position=(0.5, 0.0, 0.0025))
    np.testing.assert_allclose(held.predicted_positions, [[0.5, 0.0, 0.005], [0.5, 0.0, 0.005]])
    # pressing down 2.5 cm from there aims 2.75 cm below the floor: rejected
    with pytest.raises(SafetyViolation, match=r"step 0 would take the TCP to z = -0.0225 m"):
        check(chunk([0, 0, -0.5]), position=(0.5, 0.0, 0.0025))


def test_workspace_prediction_uses_the_limited_translation():
    # max 1 cm/step from z = 0.03: 0.02, 0.01, 0.00 -> step 2 is the first outside (not step 0)
    with pytest.raises(SafetyViolation, match="step 2 would take the TCP to z"):
        check(chunk([0, 0, -1], [0, 0, -1], [0, 0, -1]), position=(0.5, 0.0, 0.03), max_translation=0.01,
              workspace_clip_margin=0.0)


def test_custom_workspace():
    limits = {"workspace_low": (0.4, -0.1, 0.2), "workspace_high": (0.6, 0.1, 0.4)}
    with pytest.raises(SafetyViolation, match="step 0 would take the TCP to x = 0.6500"):
        check(chunk([1.0]), position=(0.6, 0.0, 0.3), **limits)
    np.testing.assert_allclose(check(chunk([0.2]), position=(0.6, 0.0, 0.3), **limits).predicted_positions,
                               [[0.6, 0.0, 0.3]])


def test_a_tcp_outside_the_workspace_rejects_any_chunk():
    # z = 0.63 is 3 cm above the 0.6 ceiling, beyond the 2 cm margin: even moving back down is refused
    with pytest.raises(SafetyViolation, match="outside the workspace .* on z by more than workspace_clip_margin=0.02 "
                                              r"m; bring it back inside \(e.g. move_home\(\)\)"):
        check(chunk([0, 0, -1]), position=(0.5, 0.0, 0.63))
    with pytest.raises(ValueError, match=r"workspace_clip_margin must be in \[0.0, 0.05\], got 0.1"):
        SafetyLimits(workspace_clip_margin=0.1)
    with pytest.raises(SafetyViolation, match="3 finite numbers"):
        check(chunk([0]), position=(0.5, np.nan, 0.3))
