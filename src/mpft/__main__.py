"""``python -m mpft`` (also what ``torchrun -m mpft train ...`` runs)."""

import sys

from mpft.cli import main

sys.exit(main())
