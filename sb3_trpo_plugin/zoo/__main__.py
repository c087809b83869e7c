"""``python -m sb3_trpo_plugin.zoo``: rl-zoo3's command line with this package's TRPO as ``trpo``."""

import sys

from sb3_trpo_plugin.zoo import main

sys.exit(main())
