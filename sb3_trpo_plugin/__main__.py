"""``python -m sb3_trpo_plugin``: the same as the ``sb3-trpo`` command."""

import sys

from sb3_trpo_plugin.cli import main

sys.exit(main())
