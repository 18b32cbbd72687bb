"""Every fault and bad input the reliability review (issue 19) tried, run once, with the figures it asks for.

Each case runs the real thing: ``corft`` commands in their own processes (so a crash, a segfault included,
is recorded as a failure instead of ending this script), the real env on the twin (franky over loopback to
franky-sim, pyrealsense2 software cameras) in this process, where the arm's command counter
(:attr:`corft_robots.base.Arm.commands_sent`) is read. The fault injectors and command builders are the test
suite's (``tests/``); nothing here re-implements them.

A case *survives* when it ends as it should: bad input as one error line (``corft <command>: error: ...``,
no traceback) with nothing written, a fault with the arm stopped and every finished episode intact, a
killed run resuming to what an uninterrupted one gives. It prints one line per case (case, outcome, the
error's first line), then the totals: cases tried, survived, finished episodes lost (must be 0), commands
the arm accepted after a rejection or after a fault was raised (must be 0).

Run from the repository root: ``python -m benchmarks.faults [--quick] [--work DIR]``. ``--quick`` leaves
out the twin's collection faults and the comparison against uninterrupted runs (their kills still run).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import corft_envs  # noqa: E402,F401
from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_algos.callbacks import list_checkpoints  # noqa: E402
from corft_algos.evaluation import load_model  # noqa: E402
from corft_envs.collection import CollectConfig, collect  # noqa: E402
from corft_envs.episode_store import EpisodeDataset  # noqa: E402
from corft_envs.folder_lock import LOCK_NAME  # noqa: E402
from corft_robots.contract import CONTROL_PERIOD  # noqa: E402
from tests.test_cli_train_eval import damage_bytes, replace_zip_member, train_args  # noqa: E402
from tests.test_collection import assert_same_datasets, collect_args, wait_for_episode_files  # noqa: E402
from tests.test_real_env import (  # noqa: E402
    ARM_OPTIONS, ENV_ID as REAL_ENV_ID, FAULTS, IMAGE_SIZE, FaultAfter, chunk_along_x, make_twin_env, sent_since,
    settle)

REPO = Path(__file__).resolve().parents[1]
SIM_ENV_ID = "corft/PickPlace-v0"
#: Steps of the killed trainings: far more than are trained between the first checkpoint and the kill.
KILLED_TRAINING_STEPS = 100


@dataclass
class Args:
    """Benchmark settings."""

    quick: bool = False
    work: str = ""  # a folder for the stores and runs (default: a temporary one, removed at the end)


@dataclass
class Case:
    """What one fault or bad input did.

    :param name: the case.
    :param survived: whether it ended as it should (see the module docstring).
    :param outcome: what happened, in a few words.
    :param message: the first line of the error it gave (empty if none).
    :param episodes_lost: finished episodes no longer intact afterwards.
    :param commands_after: commands the arm (or the sim env) accepted after a rejection or a raised fault.
    """

    name: str
    survived: bool
    outcome: str
    message: str = ""
    episodes_lost: int = 0
    commands_after: int = 0


@dataclass
class Run:
    """A finished ``corft`` process."""

    status: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """stderr without progress bars (transformers' weight loading draws one)."""
        return [line for line in self.stderr.splitlines() if line.strip() and "\r" not in line and "it/s]" not in line]

    def first_error(self) -> str:
        lines = self.error_lines()
        return lines[0] if lines else ""


def corft(*args: str, setup: str = "", preexec_fn: Callable[[], None] | None = None) -> Run:
    """Run ``corft ARGS`` in its own process (``setup``: Python run first, e.g. to lower a limit)."""
    code = "\n".join(["import sys", setup, "from corft_algos.cli import main", "sys.exit(main(sys.argv[1:]))"])
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=900, preexec_fn=preexec_fn)
    return Run(result.returncode, result.stdout, result.stderr)


def start_corft(*args: str) -> subprocess.Popen[str]:
    """Start ``corft ARGS`` in its own process and return at once."""
    return subprocess.Popen([sys.executable, "-m", "corft_algos.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def one_line_error(run: Run, command: str, expect: str) -> tuple[bool, str]:
    """Whether ``run`` exited 1 with exactly one error line naming ``expect`` and no traceback."""
    lines = run.error_lines()
    clean = (run.status == 1 and len(lines) == 1 and lines[0].startswith(f"corft {command}: error: ")
             and expect in lines[0] and "Traceback" not in run.stderr)
    return clean, f"exit {run.status}, {len(lines)} stderr line(s)"


def digests(store: Path) -> dict[str, str]:
    """sha256 of each episode file of a store."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(store.glob("episode_*.h5"))}


def lost(before: dict[str, str], store: Path) -> int:
    """Finished episodes of ``before`` that are gone or changed in ``store``."""
    after = digests(store)
    return sum(after.get(name) != digest for name, digest in before.items())


def policy_state(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path, device="cpu").policy.state_dict()


def same_parameters(left: Path, right: Path) -> bool:
    a, b = policy_state(left), policy_state(right)
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


class Workspace:
    """The stores and runs the cases share, made once."""

    def __init__(self, root: Path, quick: bool) -> None:
        self.root, self.quick = root, quick
        self.store = root / "store"  # 3 scripted PickPlace demos at 32 px
        run = corft(*collect_args(self.store, 3))
        assert run.status == 0, run.stderr
        self.other_store = root / "other_store"  # 2 other demos
        run = corft(*collect_args(self.other_store, 2, "--seed", "40"))  # the last --seed wins
        assert run.status == 0, run.stderr
        self.run = root / "run"  # a tiny SFT run of 4 steps, checkpoints at 2 and 4
        run = corft(*train_args(self.store, self.run, 4))
        assert run.status == 0, run.stderr
        self.model = self.run / "model.zip"
        self._count = 0

    def path(self, name: str) -> Path:
        """A fresh path under the workspace."""
        self._count += 1
        return self.root / f"{self._count:02d}_{name}"

    def copy_store(self, name: str) -> Path:
        out = self.path(name)
        shutil.copytree(self.store, out, ignore=shutil.ignore_patterns(LOCK_NAME))
        return out

    def copy_run(self, name: str) -> Path:
        out = self.path(name)
        shutil.copytree(self.run, out, ignore=shutil.ignore_patterns(LOCK_NAME))
        return out


# -- bad input: one line, nothing written --------------------------------------------------------------------


def bad_input_cases(ws: Workspace) -> Iterator[Case]:
    """Each command with a bad argument: one error line naming what to do, nothing written."""
    existing = ws.root / "notes.txt"
    existing.write_text("keep me")

    def train_with(out: Path, *flags: str, policy: str | None = None, device: str | None = None) -> list[str]:
        args = train_args(ws.store, out, 1, *flags)
        for flag, value in (("--policy-kwargs", policy), ("--device", device)):
            if value is not None:
                args[args.index(flag) + 1] = value
        return args

    def eval_with(*flags: str) -> list[str]:
        return ["eval", "--model", str(ws.model), "--episodes", "1", "--device", "cpu", "--quiet", *flags]

    def collect_to(out: Path, *flags: str) -> list[str]:
        return ["collect", "--env", SIM_ENV_ID, "--episodes", "1", "--image-size", "32", "--out", str(out),
                "--quiet", *flags]

    cases: list[tuple[str, str, list[str], str, Path | None]] = []
    for name, policy, expect in [
        ("--policy-kwargs unknown name", '{"nope": 1}', "VLAPolicy takes no argument nope"),
        ("--policy-kwargs wrong type", '{"d_model": "x"}', "d_model='x' is not int"),
        ("--policy-kwargs bad size", '{"d_model": 30, "heads": 4}', "d_model=30 must be a multiple of heads=4"),
    ]:
        out = ws.path("run")
        cases.append((name, "train", train_with(out, policy=policy), expect, out / "model.zip"))
    out = ws.path("run")
    cases.append(("--algo-kwargs wrong type", "train", train_with(out, "--algo-kwargs", '{"max_grad_norm": "x"}'),
                  "max_grad_norm='x' is not float", out / "model.zip"))
    out = ws.path("run")
    cases.append(("--device tpu9", "train", train_with(out, device="tpu9"), "'tpu9' is not a device",
                  out / "model.zip"))
    cases.append(("train --out an existing file", "train", train_with(existing), "is a file", None))
    cases.append(("collect --out an existing file", "collect", collect_to(existing), "is a file", None))
    for name, flags, expect in [
        ("eval --env-kwargs positions vs --positions", ["--positions", "unseen", "--env-kwargs", '{"positions": "train"}'],
         "--env-kwargs sets positions='train', --positions sets 'unseen'"),
        ("eval --env-kwargs image_size vs the model's", ["--env-kwargs", '{"image_size": 64}'],
         "--env-kwargs sets image_size=64, the model's image size sets 32"),
        ("eval --env-kwargs unknown key", ["--env-kwargs", '{"nope": 1}'], "cannot be made with ['nope']"),
        ("eval --env-kwargs chunk_size", ["--env-kwargs", '{"chunk_size": 4}'], "may not set chunk_size"),
    ]:
        cases.append((name, "eval", eval_with(*flags), expect, None))
    for name, flags, expect in [
        ("collect --env-kwargs positions vs --positions", ["--positions", "unseen", "--env-kwargs",
                                                           '{"positions": "train"}'], "--positions sets 'unseen'"),
        ("collect --env-kwargs boolean 'no'", ["--env-kwargs", '{"distractors": "no"}'],
         "distractors must be true or false"),
        ("collect --env-kwargs gamma without chunking", ["--env-kwargs", '{"gamma": 0.9}'], "may not set gamma"),
    ]:
        out = ws.path("store")
        cases.append((name, "collect", collect_to(out, *flags), expect, out))
    for name, command, args, expect, must_not_exist in cases:
        run = corft(*args)
        clean, outcome = one_line_error(run, command, expect)
        written = must_not_exist is not None and must_not_exist.exists()
        yield Case(name, clean and not written and existing.read_text() == "keep me",
                   outcome + (", wrote output" if written else ""), run.first_error())


def env_argument_cases() -> Iterator[Case]:
    """Env arguments checked where the env is made (in this process)."""
    for name, kwargs, expect in [("gym.make gamma without chunk_size", {"gamma": 0.9}, "pass chunk_size=H"),
                                 ("gym.make distractors='no'", {"distractors": "no"}, "must be true or false")]:
        try:
            gym.make(SIM_ENV_ID, image_size=32, **kwargs).close()
        except ValueError as exc:
            yield Case(name, expect in str(exc), "ValueError", str(exc).splitlines()[0])
        else:
            yield Case(name, False, "accepted")


# -- stores: damaged, non-finite, misshapen, full disks --------------------------------------------------------


def store_cases(ws: Workspace) -> Iterator[Case]:
    """Damaged stores refused in one line naming the file; full disks stopping collect with the store intact."""
    import h5py

    def damaged_store(name: str, damage: Callable[[Path], None]) -> tuple[Path, dict[str, str]]:
        store = ws.copy_store(name)
        damage(store)
        return store, digests(store)

    def set_array(path: Path, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
        with h5py.File(path, "r+") as handle:
            values = change(handle[name][...])
            del handle[name]
            handle[name] = values

    def poke(index: tuple[int, ...], value: float) -> Callable[[np.ndarray], np.ndarray]:
        def change(array: np.ndarray) -> np.ndarray:
            array[index] = value
            return array
        return change

    for name, damage, expect in [
        ("NaN in a store's actions", lambda s: set_array(s / "episode_000001.h5", "actions", poke((3, 2), np.nan)),
         "actions holds NaN or inf"),
        ("inf in a store's rewards", lambda s: set_array(s / "episode_000002.h5", "rewards", poke((0,), np.inf)),
         "rewards holds NaN or inf"),
        ("NaN in a store's state", lambda s: set_array(s / "episode_000000.h5", "observations/state",
                                                       poke((5, 0), np.nan)), "holds NaN or inf"),
        ("truncated episode file", lambda s: (s / "episode_000001.h5").write_bytes(
            (s / "episode_000001.h5").read_bytes()[:30000]), "truncated or corrupt"),
        ("missing episode file", lambda s: (s / "episode_000001.h5").unlink(), "listed in"),
        ("truncated index.json", lambda s: (s / "index.json").write_text((s / "index.json").read_text()[:300]),
         "rebuild it from the episode files"),
        ("index.json of {}", lambda s: (s / "index.json").write_text("{}"), "rebuild it from the episode files"),
    ]:
        store, before = damaged_store("store", damage)
        run = corft(*train_args(store, ws.path("run"), 1))
        clean, outcome = one_line_error(run, "train", expect)
        yield Case(f"train on: {name}", clean, outcome, run.first_error(), episodes_lost=lost(before, store))

    store, before = damaged_store("store", lambda s: (s / "index.json").write_text("{}"))
    (store / "index.json").unlink()  # what the message says to do
    run = corft(*collect_args(store, 3))
    yield Case("index.json of {}: deleting it rebuilds it", run.status == 0 and "saved 3 episodes" in run.stdout,
               f"exit {run.status}", run.first_error(), episodes_lost=lost(before, store))

    store, before = damaged_store("store", lambda s: set_array(s / "episode_000001.h5", "observations/state",
                                                                lambda a: a[:, :10]))
    run = corft(*collect_args(store, 4))
    clean, outcome = one_line_error(run, "collect", "expected float32")
    intact = {name: digest for name, digest in before.items() if name != "episode_000001.h5"}
    yield Case("collect resumes on a misshapen episode file", clean, outcome, run.first_error(),
               episodes_lost=lost(intact, store))

    store = ws.copy_store("store")
    before = digests(store)
    run = corft(*collect_args(store, 6), setup="import shutil, corft_envs.episode_store.writer as s; "
                f"s.DISK_RESERVE_BYTES = shutil.disk_usage({str(store)!r}).free + 2**30")
    clean, outcome = one_line_error(run, "collect", "3 finished episodes are intact")
    yield Case("disk too full for the next episode", clean and digests(store) == before, outcome,
               run.first_error(), episodes_lost=lost(before, store))

    store = ws.copy_store("store")
    before = digests(store)
    limit = 32 * 2**10

    def limit_file_size() -> None:  # every write past 32 KiB fails as on a full disk; the index (3 KiB) fits
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = corft(*collect_args(store, 6), preexec_fn=limit_file_size)
    clean, outcome = one_line_error(run, "collect", "3 finished episodes are intact")
    partial = list(store.glob(".*.tmp"))
    yield Case("a write failing for want of space", clean and not partial, outcome + (", partial file left" if partial
               else ""), run.first_error(), episodes_lost=lost(before, store))


def collection_kill_cases(ws: Workspace) -> Iterator[Case]:
    """SIGKILL and Ctrl-C during ``corft collect``: every finished episode kept, the rerun completes it."""
    killed = ws.path("store")
    process = start_corft(*collect_args(killed, 4))
    wait_for_episode_files(killed, process, 1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = digests(killed)
    run = corft(*collect_args(killed, 4))
    survived = run.status == 0 and len(EpisodeDataset(killed)) == 4 and f"from process {process.pid}" in run.stderr
    if not ws.quick:
        reference = ws.path("store")
        corft(*collect_args(reference, 4))
        try:
            assert_same_datasets(killed, reference)
        except AssertionError:
            survived = False
    yield Case("SIGKILL during collect, then rerun", survived, f"{len(before)} kept, rerun exit {run.status}"
               + ("" if ws.quick else ", equals an uninterrupted run"), "", episodes_lost=lost(before, killed))

    interrupted = ws.path("store")
    process = start_corft(*collect_args(interrupted, 4))
    wait_for_episode_files(interrupted, process, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate()
    before = digests(interrupted)
    run = corft(*collect_args(interrupted, 4))
    survived = process.returncode == 130 and "resume with:" in stderr and run.status == 0
    first = next((line for line in stderr.splitlines() if line.strip()), "")
    yield Case("Ctrl-C during collect, then rerun", survived, f"exit {process.returncode}, {len(before)} kept",
               first, episodes_lost=lost(before, interrupted))


# -- trainings: other data, damaged checkpoints, two in one folder, SIGKILL ------------------------------------


def training_cases(ws: Workspace) -> Iterator[Case]:
    """Resuming ``corft train`` on bad ground, and killing it."""
    out = ws.copy_run("run")
    run = corft(*train_args(ws.other_store, out, 6))
    clean, outcome = one_line_error(run, "train", f"({ws.store.resolve()})")
    yield Case("resume train on other --data", clean and load_model(out / "model.zip").num_timesteps == 4,
               outcome, run.first_error())

    damages = [("a CRC mismatch", damage_bytes),
               ("an unreadable policy.safetensors",
                lambda p: replace_zip_member(p, "policy.safetensors", b"\x80\x02 junk"))]
    for name, damage in damages:
        out = ws.copy_run("run")
        damage(out / "model.zip")
        damage(out / "checkpoints" / "rl_model_4_steps.zip")
        run = corft(*train_args(ws.store, out, 6))
        resumed = "resumed from" in run.stdout and "rl_model_2_steps.zip at gradient step 2" in run.stdout
        skipped = run.stdout.count("skipping ")
        yield Case(f"resume: latest checkpoint with {name}", run.status == 0 and resumed and skipped == 2,
                   f"exit {run.status}, {skipped} skipped, resumed at step 2" if resumed else f"exit {run.status}",
                   next((line for line in run.stdout.splitlines() if line.startswith("skipping")), ""))

    for name, damage in damages:
        model = ws.path("model.zip")
        shutil.copy(ws.model, model)
        damage(model)
        for command, flag, args in [
                ("eval", "--model", ["eval", "--model", str(model), "--episodes", "1", "--quiet"]),
                ("train", "--init-from", train_args(ws.store, ws.path("run"), 1, "--init-from", str(model)))]:
            run = corft(*args)
            clean, outcome = one_line_error(run, command, "cannot be loaded")
            yield Case(f"{command} {flag}: model with {name}", clean, outcome, run.first_error())

    # A run in progress (paused once its first checkpoint is on disk, so it certainly holds the lock), a second
    # one in its folder, then SIGKILL and the same command again.
    killed = ws.path("run")
    process = start_corft(*train_args(ws.store, killed, KILLED_TRAINING_STEPS))
    deadline = time.monotonic() + 600
    while not list_checkpoints(killed / "checkpoints") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGSTOP)
    second = corft(*train_args(ws.store, killed, KILLED_TRAINING_STEPS))
    clean, outcome = one_line_error(second, "train", f"process {process.pid} is writing")
    yield Case("two trainings in one folder", clean, outcome, second.first_error())
    process.send_signal(signal.SIGKILL)
    process.communicate()
    steps = max((steps for steps, _ in list_checkpoints(killed / "checkpoints")), default=0)
    run = corft(*train_args(ws.store, killed, KILLED_TRAINING_STEPS))
    took_over = f"taking over {killed / LOCK_NAME} from process {process.pid}" in run.stdout
    yield Case("stale lock of a killed training", run.status == 0 and took_over, f"exit {run.status}",
               next((line for line in run.stdout.splitlines() if line.startswith("taking over")), ""))
    resumed = f"at gradient step {steps}" in run.stdout and 0 < steps < KILLED_TRAINING_STEPS
    outcome = f"killed at step {steps}, resumed"
    if not ws.quick:
        reference = ws.path("run")
        corft(*train_args(ws.store, reference, KILLED_TRAINING_STEPS))
        same = same_parameters(killed / "model.zip", reference / "model.zip")
        outcome += ", parameters equal an uninterrupted run's" if same else ", parameters DIFFER"
        resumed = resumed and same
    yield Case("SIGKILL during training, then rerun", run.status == 0 and resumed, outcome)


# -- the real env on the twin: the arm's commands counted --------------------------------------------------------


def twin_cases(ws: Workspace) -> Iterator[Case]:
    """Each hardware fault on a chunk of the real env: the error, and the arm's commands after it."""
    jump = np.vstack([chunk_along_x(4, dx=0.8), chunk_along_x(1, dx=-0.8)])
    faults = {**FAULTS, "jump": (None, jump, FAULTS["nan_action"][2], r"jumps by 1\.600")}
    for fault, (inject, chunk, error, message) in faults.items():
        env = make_twin_env(chunk_size=10)
        try:
            env.reset(seed=0)
            env.step(chunk_along_x(2))
            settle(env)
            arm = env.unwrapped.arm
            before = arm.commands_sent
            if inject is not None:
                inject(env)
            raised: BaseException | None = None
            try:
                env.step(chunk)
            except BaseException as exc:  # noqa: BLE001 (Ctrl-C is one of the faults)
                raised = exc
            finally:
                arm.on_command = None
            during = sent_since(env, before)
            stopped = not arm.is_connected or not arm.is_moving
            rejected = isinstance(raised, FAULTS["nan_action"][2])
            if rejected:  # nothing of a rejected chunk goes out, and the episode goes on
                after = during["move"] + during["gripper"]
                env.step(chunk_along_x(1))
                goes_on = sent_since(env, before)["move"] == 1
            else:  # a fault ends the episode: nothing goes out after it
                try:
                    env.step(chunk_along_x(1))
                except RuntimeError:
                    pass
                later = sent_since(env, before)
                after = later["move"] + later["gripper"] - during["move"] - during["gripper"]
                goes_on = True
            text = "" if raised is None else (str(raised).splitlines() or [type(raised).__name__])[0]
            named = message is None or re.search(message, str(raised)) is not None
            survived = isinstance(raised, error) and named and goes_on and stopped and after == 0
            yield Case(f"twin: {fault.replace('_', ' ')}", survived,
                       f"{type(raised).__name__}, {during['move']} target(s) before it", text, commands_after=after)
        finally:
            env.close()


def twin_collection_cases(ws: Workspace) -> Iterator[Case]:
    """Each hardware fault part-way through an episode of ``collect`` on the twin: finished episodes intact."""
    source = ws.path("twin_store")
    config = CollectConfig(env_id=REAL_ENV_ID, episodes=1, out=source, image_size=IMAGE_SIZE, seed=0,
                           robot_host="twin", env_options={"arm_options": ARM_OPTIONS})
    collect(config, progress=False)
    for fault in ("camera_timeout", "server_dies", "nan_action", "ctrl_c"):
        out = ws.path("twin_store")
        shutil.copytree(source, out, ignore=shutil.ignore_patterns(LOCK_NAME))
        before = digests(out)
        resumed = CollectConfig(**{**config.__dict__, "out": out, "episodes": 2})
        try:
            collect(resumed, progress=False, make_policy=lambda env: FaultAfter(env, fault))
        except BaseException as exc:  # noqa: BLE001
            raised: BaseException | None = exc
        else:
            raised = None
        text = "" if raised is None else (str(raised).splitlines() or [type(raised).__name__])[0]
        survived = isinstance(raised, FAULTS[fault][2]) and len(EpisodeDataset(out)) == 1
        yield Case(f"twin collect: {fault.replace('_', ' ')}", survived, type(raised).__name__, text,
                   episodes_lost=lost(before, out))


def sim_chunk_case() -> Iterator[Case]:
    """A chunk with a NaN part-way through in the sim env: none of it runs."""
    env = gym.make(SIM_ENV_ID, image_size=32, chunk_size=4)
    try:
        env.reset(seed=0)
        began = env.unwrapped.data.time
        chunk = np.zeros((4, 7), np.float32)
        chunk[:, 0] = 1.0
        chunk[2, 1] = np.nan
        try:
            env.step(chunk)
        except ValueError as exc:
            ran = round((env.unwrapped.data.time - began) / CONTROL_PERIOD)
            yield Case("sim: NaN part-way through a chunk", ran == 0, "ValueError", str(exc).splitlines()[0],
                       commands_after=ran)
        else:
            yield Case("sim: NaN part-way through a chunk", False, "ran")
    finally:
        env.close()


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is a fault here; a background job ignores it
    torch.set_num_threads(1)
    logging.getLogger().addHandler(logging.NullHandler())  # the arm's "stopping the arm after ..." logs: not here
    transformers.utils.logging.disable_progress_bar()
    began = time.monotonic()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="corft_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    try:
        ws = Workspace(work, args.quick)
        groups = [bad_input_cases(ws), env_argument_cases(), store_cases(ws), collection_kill_cases(ws),
                  training_cases(ws), sim_chunk_case(), twin_cases(ws)]
        if not args.quick:
            groups.append(twin_collection_cases(ws))
        for group in groups:
            for case in group:
                cases.append(case)
                status = "survived" if case.survived else "FAILED"
                print(f"{case.name:52s} {status:9s} {case.outcome}" + (f" | {case.message}" if case.message else ""),
                      flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    survived = sum(case.survived for case in cases)
    print(f"\ncases tried: {len(cases)}, survived: {survived}, finished episodes lost: "
          f"{sum(case.episodes_lost for case in cases)}, commands sent after a rejection (or a raised fault): "
          f"{sum(case.commands_after for case in cases)} ({time.monotonic() - began:.0f} s"
          f"{', --quick' if args.quick else ''})")
    if survived < len(cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
