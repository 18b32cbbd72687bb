"""``corft bench``: run a benchmark study (the study lives in :mod:`benchmarks.paper`)."""

from __future__ import annotations

import argparse


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft bench paper``."""
    from benchmarks import paper

    parser = subparsers.add_parser("bench", help="run a benchmark study", description="Run a benchmark study.")
    studies = parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    study = studies.add_parser("paper", help="the paper's claims in simulation: CO-RFT against BC baselines",
                               description=paper.__doc__.split("\n\n")[0])
    paper.add_arguments(study)
    study.set_defaults(handler=paper.run_from_args)
