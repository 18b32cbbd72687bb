"""Key presses of the operator: from the terminal, or from a script that stands in for one.

A :class:`KeySource` is polled once per control step and returns the keys
pressed since the last poll. :class:`TerminalKeys` reads the terminal in
cbreak mode (no Enter needed, nothing echoed); :class:`ScriptedKeys` replays
one line of keys per poll, so a teleoperated session can be rehearsed on the
twin and tested without anyone at the keyboard.

The operator labels an episode with :data:`SUCCESS_KEYS` (Enter) or
:data:`FAILURE_KEYS` (Backspace); :func:`episode_label` reads those.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol

#: Keys that end an episode as a success (Enter, as a terminal in cbreak mode sends it, or a newline).
SUCCESS_KEYS = frozenset("\r\n")
#: Keys that end an episode as a failure (Backspace, as terminals send it).
FAILURE_KEYS = frozenset("\x7f\b")
#: How a script file writes Enter and Backspace, one step's keys per line.
SCRIPT_ESCAPES = {"<enter>": "\n", "<backspace>": "\x7f"}

EpisodeLabel = Literal["success", "failure"]


class KeySource(Protocol):
    """Where the operator's key presses come from."""

    def poll(self) -> str:
        """The keys pressed since the last poll, oldest first (``""`` if none); never blocks."""

    def wait_for(self, keys: Iterable[str], prompt: str) -> str:
        """Print ``prompt`` and block until one of ``keys`` is pressed; return it."""


def episode_label(keys: str) -> EpisodeLabel | None:
    """``"success"`` or ``"failure"`` if ``keys`` hold a label key (the last one wins), else ``None``."""
    for key in reversed(keys):
        if key in SUCCESS_KEYS:
            return "success"
        if key in FAILURE_KEYS:
            return "failure"
    return None


class TerminalKeys:
    """Keys typed in this process's terminal, read without Enter and without echo.

    Use it as a context manager (or call :meth:`close`): it restores the
    terminal's settings on leaving, Ctrl-C and errors included. Ctrl-C still
    raises ``KeyboardInterrupt`` (cbreak mode keeps signals).

    :param stream: the terminal to read; standard input by default.
    :raises RuntimeError: if ``stream`` is not a terminal.
    """

    def __init__(self, stream=None) -> None:
        self._stream = sys.stdin if stream is None else stream
        if not self._stream.isatty():
            raise RuntimeError(
                "keyboard teleoperation reads the terminal, but standard input is not one; run it in a terminal, "
                "or replay a key script (--teleop-script FILE, one line of keys per control step)"
            )
        self._fd = self._stream.fileno()
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)

    def poll(self) -> str:
        keys = []
        while select.select([self._fd], [], [], 0.0)[0]:
            chunk = os.read(self._fd, 1024)
            if not chunk:
                break
            keys.append(chunk.decode(errors="ignore"))
        return "".join(keys)

    def wait_for(self, keys: Iterable[str], prompt: str) -> str:
        wanted = set(keys)
        print(prompt, file=sys.stderr, flush=True)
        while True:
            select.select([self._fd], [], [])
            for key in os.read(self._fd, 1024).decode(errors="ignore"):
                if key in wanted:
                    return key

    def close(self) -> None:
        """Give the terminal its settings back; safe to call twice."""
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> TerminalKeys:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class KeyScriptExhausted(EOFError):
    """A :class:`ScriptedKeys` was polled after its last line."""


class ScriptedKeys:
    """Replays key presses: poll ``k`` returns ``steps[k]``.

    Polling past the last step raises :class:`KeyScriptExhausted`: a script
    that runs out mid-episode is a broken rehearsal, not an idle operator.

    :param steps: the keys of each poll, e.g. ``["w", "ww", "", " ", "\\n"]``.
    """

    def __init__(self, steps: Iterable[str]) -> None:
        self.steps = list(steps)
        self.position = 0

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ScriptedKeys:
        """One poll per line of a text file; ``<enter>`` and ``<backspace>`` stand for those keys.

        :raises FileNotFoundError: naming the file, if it does not exist.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"key script '{path}' does not exist (one line of keys per control step)")
        lines = path.read_text(encoding="utf-8").splitlines()
        for name, key in SCRIPT_ESCAPES.items():
            lines = [line.replace(name, key) for line in lines]
        return cls(lines)

    def poll(self) -> str:
        if self.position >= len(self.steps):
            raise KeyScriptExhausted(f"the key script ran out after its {len(self.steps)} lines")
        keys = self.steps[self.position]
        self.position += 1
        return keys

    def wait_for(self, keys: Iterable[str], prompt: str) -> str:
        wanted = set(keys)
        while True:
            for key in self.poll():
                if key in wanted:
                    return key
