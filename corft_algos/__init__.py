"""Policies, datasets and learning algorithms (SFT, CO-RFT, baselines), and the ``corft`` command line."""
