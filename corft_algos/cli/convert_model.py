"""``corft convert-model``: convert a model file in the old pickle-based format to the model format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR
from corft_algos.legacy_format import TRUST_WARNING, convert_old_model


def add_convert_model_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft convert-model``."""
    parser = subparsers.add_parser(
        "convert-model",
        help="convert a model file in the old pickle-based format to the model format (trusted files only)",
        description=(
            "Convert a model zip saved in corft's old format (stable-baselines3's, with pickled objects) to "
            "the model format (JSON and safetensors), which loads without running code. WARNING: "
            f"{TRUST_WARNING}. The converted file is checked to load with the same weights."
        ),
    )
    parser.add_argument("old", type=Path, metavar="OLD.zip", help="the model zip in the old format")
    parser.add_argument("new", type=Path, metavar="NEW.zip", help="where to write the converted model (must not exist)")
    parser.set_defaults(handler=run_convert_model)


def run_convert_model(args: argparse.Namespace) -> int:
    """Run ``corft convert-model``; one error line and exit status 1 for a file it cannot convert."""
    print(f"corft convert-model: warning: {TRUST_WARNING}", file=sys.stderr)
    try:
        model = convert_old_model(args.old, args.new)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"corft convert-model: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.new}: a {model.algorithm_name} model at gradient step {model.num_timesteps}, in the model "
          "format (it loads without running code; the old file can go)")
    return 0

