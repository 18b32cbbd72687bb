"""The twin's world in a process of its own, so that the robot server never waits for the policy's process.

franky-sim's server is a Python thread that steps the physics at 1 kHz and answers franky over loopback. In
the process that also runs the policy, the cameras' streaming and the real env, it competes for that
process's interpreter lock: measured on this machine, one busy Python thread beside it slowed the twin's
clock to 2.5% of real time (0.05 s of simulated time in 2 s), and on a loaded CPU libfranka's 1 s receive
timeout then fired in the middle of evaluations ("connection lost while reading the robot state").
:class:`TwinWorldProcess` runs a :class:`~corft_envs.twin.TwinWorld` in a child process and forwards
calls to it over a socket pair, one at a time, from any thread; franky connects to the child's server as to
any robot. The child is a fresh interpreter (``python -m corft_envs.twin_process``): not a fork (MuJoCo's
OpenGL context and franky-sim's threads do not survive one), nor ``multiprocessing``'s spawn (which runs the
user's script again in the child unless the script guards its entry point).

What it offers is :class:`~corft_envs.twin.TwinWorld`'s interface without
:meth:`~corft_envs.twin.TwinWorld.physics` (the MuJoCo data lives in the child): tests that write into
the physics use a :class:`~corft_envs.twin.TwinWorld` in their own process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from corft_envs.sim_env import DEFAULT_IMAGE_SIZE
from corft_envs.tasks import SceneState, get_task

#: The calls forwarded to the child's :class:`~corft_envs.twin.TwinWorld`.
FORWARDED = ("reset", "reset_robot_state", "scene_state", "is_success", "tcp_pose", "sim_time", "render",
             "kill_server")
#: Longest wait for the child to start its world (s): a fresh interpreter imports MuJoCo and franky-sim.
START_TIMEOUT = 120.0
#: Longest wait for the answer to one call (s); beyond it the child counts as hung.
CALL_TIMEOUT = 60.0
#: Longest wait for the child to stop its world and exit before it is terminated (s).
STOP_TIMEOUT = 10.0


def _serve(connection: Connection, arguments: dict[str, Any]) -> None:
    """The child: start a :class:`~corft_envs.twin.TwinWorld`, answer calls until told to stop or the parent
    goes away, then stop it. Every answer is ``(True, value)`` or ``(False, exception)``."""
    from corft_envs.twin import TwinWorld  # imported here: the parent does not need the world's modules

    try:
        world = TwinWorld(**arguments).start()
    except Exception as error:  # noqa: BLE001 - the parent raises it
        connection.send((False, error))
        return
    try:
        connection.send((True, world.hostname))
        while True:
            try:
                name, args = connection.recv()
            except EOFError:  # the parent has gone
                return
            if name == "stop":
                return
            try:
                if name not in FORWARDED:
                    raise ValueError(f"the twin's process answers {', '.join(FORWARDED)} and stop, not {name!r}")
                connection.send((True, getattr(world, name)(*args)))
            except Exception as error:  # noqa: BLE001 - the parent raises it
                connection.send((False, error))
    finally:
        world.stop()
        connection.close()


class TwinWorldProcess:
    """A :class:`~corft_envs.twin.TwinWorld` running in a child process; the same arguments and calls.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; it starts once. Calls may come
    from any thread (the cameras' streaming threads render through it); they run one at a time.

    :raises ValueError: for an unknown task (the other arguments are checked in the child, at :meth:`start`).
    :raises RuntimeError: from a call, if the child has died or does not answer within
        :data:`CALL_TIMEOUT`; the child's own errors (a bad argument, a dead physics thread) are raised as
        they were raised there.
    """

    def __init__(self, task: str = "PickPlace", positions: str = "train", image_size: int = DEFAULT_IMAGE_SIZE,
                 distractors: bool = True) -> None:
        self.task = get_task(task)
        self._arguments = {"task": task, "positions": positions, "image_size": image_size,
                           "distractors": distractors}
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._hostname = ""
        self._started = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> TwinWorldProcess:
        """Start the child and its world; return once franky can connect to :attr:`hostname`.

        :raises RuntimeError: if it was started before, or the child did not start within
            :data:`START_TIMEOUT`; the world's own errors as the child raised them.
        """
        if self._started:
            raise RuntimeError("a TwinWorldProcess starts once; make a new one")
        self._started = True
        parent_end, child_end = socket.socketpair()
        with child_end:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(child_end.fileno()), json.dumps(self._arguments)],
                pass_fds=(child_end.fileno(),))
        self._connection = Connection(parent_end.detach())
        self._hostname = self._answer(START_TIMEOUT, "starting")
        return self

    def stop(self) -> None:
        """Stop the world and the child. Safe to call twice."""
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.send(("stop", ()))
                except OSError:  # the child has already gone
                    pass
            self._end_child()

    def __enter__(self) -> TwinWorldProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id (fault rehearsals pause it to slow the twin's clock)."""
        self._require_running()
        assert self._process is not None
        return self._process.pid

    @property
    def hostname(self) -> str:
        """The loopback address franky connects to."""
        self._require_running()
        return self._hostname

    # ---------------------------------------------------------- forwarded
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """:meth:`TwinWorld.reset <corft_envs.twin.TwinWorld.reset>` in the child."""
        return self._call("reset", seed)

    def reset_robot_state(self) -> None:
        """:meth:`TwinWorld.reset_robot_state <corft_envs.twin.TwinWorld.reset_robot_state>` in the child."""
        self._call("reset_robot_state")

    def scene_state(self) -> SceneState:
        """:meth:`TwinWorld.scene_state <corft_envs.twin.TwinWorld.scene_state>` in the child."""
        return self._call("scene_state")

    def is_success(self) -> bool:
        """:meth:`TwinWorld.is_success <corft_envs.twin.TwinWorld.is_success>` in the child."""
        return self._call("is_success")

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`TwinWorld.tcp_pose <corft_envs.twin.TwinWorld.tcp_pose>` in the child."""
        return self._call("tcp_pose")

    def sim_time(self) -> float:
        """:meth:`TwinWorld.sim_time <corft_envs.twin.TwinWorld.sim_time>` in the child."""
        return self._call("sim_time")

    def render(self, camera: str) -> np.ndarray:
        """:meth:`TwinWorld.render <corft_envs.twin.TwinWorld.render>` in the child."""
        return self._call("render", camera)

    def kill_server(self) -> None:
        """:meth:`TwinWorld.kill_server <corft_envs.twin.TwinWorld.kill_server>` in the child: the robot
        server dies, the scene stays readable."""
        self._call("kill_server")

    # -------------------------------------------------------------- helpers
    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            connection = self._require_running()
            try:
                connection.send((name, args))
            except OSError as error:
                raise RuntimeError(f"the twin's process has died ({error}); start a new twin") from None
            return self._answer(CALL_TIMEOUT, name)

    def _answer(self, timeout: float, doing: str) -> Any:
        """The child's answer, raised if it is an error. An answer that does not come ends the child: the
        pipe would pair the next call with this one's late answer."""
        connection = self._connection
        assert connection is not None
        try:
            if not connection.poll(timeout):
                raise RuntimeError(f"the twin's process did not answer within {timeout:g} s ({doing}); "
                                   "it was stopped")
            ok, value = connection.recv()
        except EOFError:
            self._end_child(terminate=True)
            raise RuntimeError(f"the twin's process has died ({doing}); start a new twin") from None
        except BaseException:  # a timeout or Ctrl-C between the call and its answer
            self._end_child(terminate=True)
            raise
        if not ok:
            if doing == "starting":
                self._end_child()
            raise value
        return value

    def _require_running(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the twin is not running; call start() or use it as a context manager")
        return self._connection

    def _end_child(self, terminate: bool = False) -> None:
        """Wait for the child to exit (terminate it after :data:`STOP_TIMEOUT`, or at once) and close the pipe."""
        if self._process is not None:
            try:
                self._process.wait(0 if terminate else STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                self._process.wait()
            self._process = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


if __name__ == "__main__":  # the child: python -m corft_envs.twin_process FD ARGUMENTS_JSON
    _serve(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
