"""Compose the MuJoCo scene: the FR3 from ``franky-sim`` on a table with a task's objects.

:func:`add_task_elements` adds everything but the robot (table, lights, the
``front`` camera, the movable objects and the fixture) to any MJCF
``worldbody``, so the same objects can be put into another simulator's scene
(the protocol-level twin of the real arm). :func:`build_scene_xml` makes the
full model for the simulated env.

Rendering settings follow the measurements in DESIGN.md: shadows and MSAA off,
and the cameras see the robot's collision meshes (geom group 3), not its
242k-face visual meshes (group 2); see :data:`RENDER_GEOM_GROUPS`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from corft_envs.layouts import EpisodeLayout
from corft_envs.robot_model import load_fr3_mjcf
from corft_envs.tasks import COLOURS, N_OBJECTS, Task

#: Physics timestep (s); a 10 Hz control step is 50 of them.
PHYSICS_TIMESTEP = 0.002
#: Geom groups the cameras render: scene objects (0, 1) and robot collision meshes (3).
RENDER_GEOM_GROUPS = (1, 1, 0, 1, 0, 0)
#: Position of the ``front`` camera and the point it looks at (m).
FRONT_CAMERA_POS = np.array([1.25, 0.0, 0.80])
FRONT_CAMERA_TARGET = np.array([0.35, 0.0, 0.12])
FRONT_CAMERA_FOVY = 50.0


def look_at_xyaxes(position: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` of a camera at ``position`` looking at ``target`` with world z up."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


def add_task_elements(worldbody: ET.Element, task: Task) -> None:
    """Add the table, lights, ``front`` camera, objects ``obj0..obj2`` and the fixture.

    The robot base is expected at the origin, on the table's top surface (z = 0).
    Objects get free joints; their colours and poses are set at reset.
    """
    ET.SubElement(worldbody, "light", name="key_light", pos="0.5 -0.6 1.6", dir="0 0.4 -1",
                  directional="true", diffuse="0.5 0.5 0.5", castshadow="false")
    ET.SubElement(worldbody, "light", name="fill_light", pos="1.2 0.6 1.2", dir="-0.6 -0.4 -1",
                  directional="true", diffuse="0.2 0.2 0.2", castshadow="false")
    ET.SubElement(worldbody, "geom", name="floor", type="plane", size="3 3 0.05",
                  pos="0 0 -0.75", rgba="0.30 0.32 0.35 1")
    ET.SubElement(worldbody, "geom", name="table", type="box", size="0.55 0.6 0.02",
                  pos="0.4 0 -0.02", rgba="0.60 0.50 0.40 1")
    ET.SubElement(worldbody, "camera", name="front", pos=" ".join(map(str, FRONT_CAMERA_POS)),
                  xyaxes=look_at_xyaxes(FRONT_CAMERA_POS, FRONT_CAMERA_TARGET),
                  fovy=str(FRONT_CAMERA_FOVY))
    half = task.object_half_size
    for index in range(N_OBJECTS):
        body = ET.SubElement(worldbody, "body", name=f"obj{index}",
                             pos=f"{0.4 + 0.1 * index} -0.1 {half[2]}")
        ET.SubElement(body, "freejoint", name=f"obj{index}_joint")
        ET.SubElement(body, "geom", name=f"obj{index}_geom", type="box",
                      size=" ".join(map(str, half)), mass="0.05", condim="4",
                      friction="1.2 0.01 0.0005", rgba="0.5 0.5 0.5 1")
    task.add_fixture(worldbody)


#: Where hidden distractors are parked (m): far from the table, out of every camera's view.
PARKED_XY = (10.0, 10.0)


def apply_layout(model: mujoco.MjModel, data: mujoco.MjData, task: Task, layout: EpisodeLayout,
                 distractors: bool = True) -> None:
    """Colour and place ``obj0..obj2`` (at rest, upright, on the table) and the fixture as ``layout`` says.

    Works on any model built with :func:`add_task_elements` (the sim env's, the twin's); calls ``mj_forward``.
    With ``distractors=False`` the objects the task does not use (index ``>= task.objects_in_play``)
    are made invisible and contact-free and parked at :data:`PARKED_XY`.
    """
    height = task.object_half_size[2]
    for index, (colour, (x, y)) in enumerate(zip(layout.colours, layout.object_xy)):
        geom = model.geom(f"obj{index}_geom")
        geom.rgba[:] = COLOURS[colour]
        if not distractors and index >= task.objects_in_play:
            geom.rgba[3], geom.contype[0], geom.conaffinity[0] = 0.0, 0, 0
            x, y = PARKED_XY
        joint = model.joint(f"obj{index}_joint")
        data.qpos[joint.qposadr[0] : joint.qposadr[0] + 7] = (x, y, height, 1.0, 0.0, 0.0, 0.0)
        data.qvel[joint.dofadr[0] : joint.dofadr[0] + 6] = 0.0
    model.body("fixture").pos[:2] = layout.fixture_xy
    mujoco.mj_forward(model, data)


def build_scene_xml(task: Task, image_size: int) -> str:
    """The full MJCF of the simulated env for ``task``.

    :param task: the task whose objects and fixture populate the table.
    :param image_size: camera image side (px); sets the offscreen buffer size.
    :return: an MJCF string for ``mujoco.MjModel.from_xml_string``.
    """
    fr3 = load_fr3_mjcf()
    root = ET.Element("mujoco", model=f"corft_{task.name.lower()}")
    ET.SubElement(root, "compiler", angle="radian", meshdir=str(fr3.meshdir))
    option = fr3.option
    option.set("timestep", str(PHYSICS_TIMESTEP))
    root.append(option)
    visual = ET.SubElement(root, "visual")
    ET.SubElement(visual, "quality", shadowsize="0", offsamples="0")
    ET.SubElement(visual, "global", offwidth=str(image_size), offheight=str(image_size))
    ET.SubElement(visual, "headlight", ambient="0.25 0.25 0.25", diffuse="0.2 0.2 0.2",
                  specular="0 0 0")
    root.append(fr3.defaults)
    root.append(fr3.assets)
    worldbody = ET.SubElement(root, "worldbody")
    worldbody.append(fr3.base_body)
    add_task_elements(worldbody, task)
    for section in fr3.sections.values():
        root.append(section)
    return ET.tostring(root, encoding="unicode")
