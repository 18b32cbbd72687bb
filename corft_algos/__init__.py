"""Policies, datasets and learning algorithms (SFT, CO-RFT, baselines), and the ``corft`` command line.

``from corft_algos import CORFT, SFT, BC, OfflineRLH1``; every algorithm is also
registered by name (``corft_algos.registry.get_algorithm("corft")``).
"""

from corft_algos.corft import CORFT, OfflineRLH1
from corft_algos.sft import BC, SFT

__all__ = ["BC", "CORFT", "OfflineRLH1", "SFT"]
