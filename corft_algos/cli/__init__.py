"""The ``corft`` command line: ``collect`` demonstrations, ``train`` an algorithm, ``eval`` a model (and
``pretrain`` a base, ``convert-model`` an old-format model file, ``view`` what a store holds, ``export`` /
``import`` a store to / from LeRobot and Minari).

A thin layer over the library: one module per subcommand, each with ``add_<name>_parser`` (its arguments)
and ``run_<name>`` (the arguments turned into a call of :mod:`corft_algos.runs`, :mod:`corft_envs.collection`,
... and the printing; it returns the exit status).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from corft_algos.cli.collect import add_collect_parser
from corft_algos.cli.common import EXIT_ERROR
from corft_algos.cli.convert_model import add_convert_model_parser
from corft_algos.cli.eval import add_eval_parser
from corft_algos.cli.export import add_export_parser
from corft_algos.cli.import_ import add_import_parser
from corft_algos.cli.pretrain import add_pretrain_parser
from corft_algos.cli.train import add_train_parser
from corft_algos.cli.view import add_view_parser
from corft_robots.extras import MissingExtraError


def build_parser() -> argparse.ArgumentParser:
    """The ``corft`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="corft", description="CO-RFT: chunked offline RL fine-tuning for VLAs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_collect_parser(subparsers)
    add_train_parser(subparsers)
    add_eval_parser(subparsers)
    add_pretrain_parser(subparsers)
    add_convert_model_parser(subparsers)
    add_view_parser(subparsers)
    add_export_parser(subparsers)
    add_import_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corft`` console script; returns the exit status (one error line for a missing extra)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except MissingExtraError as exc:
        print(f"corft {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
