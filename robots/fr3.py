"""Facts about the Franka FR3 and its hand that every layer shares (numpy only).

The simulator's model (:mod:`corft_envs.robot_model`), the sim and real envs and
the drivers in :mod:`corft_robots` all read these; nothing here loads a model or a driver.
"""

from __future__ import annotations

import numpy as np

#: Joint configuration of the home pose (the model's ``home`` keyframe): gripper
#: pointing down, TCP at about (0.55, 0, 0.52) m in the robot base frame.
HOME_JOINT_POSITIONS = np.array([0.0, 0.0, 0.0, -1.5708, 0.0, 1.5708, -0.7854])

#: TCP orientation at the home pose (w x y z): the gripper points down.
HOME_TCP_QUATERNION = np.array([0.0, np.sqrt(0.5), np.sqrt(0.5), 0.0])

#: Maximum opening of the Franka Hand (m), the sum of both finger joints.
GRIPPER_MAX_WIDTH = 0.08

#: Continuous grasping force of the Franka Hand (N).
FRANKA_HAND_MAX_FORCE = 70.0
