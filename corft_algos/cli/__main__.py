"""``python -m corft_algos.cli`` (and ``torchrun -m corft_algos.cli``): the ``corft`` command."""

import sys

from corft_algos.cli import main

sys.exit(main())
