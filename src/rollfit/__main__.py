"""``python -m rollfit`` (and ``torchrun -m rollfit``) runs the command line."""
import sys

from .cli.main import main

sys.exit(main())
