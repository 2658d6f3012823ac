"""``python -m ifbeta.cli ...`` (and ``torchrun -m ifbeta.cli ...``) runs the ``ifbeta`` command."""
import sys

from ifbeta.cli.commands import main

sys.exit(main())
