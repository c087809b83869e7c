"""
Loading model files without unpickling anything.

- :func:`safe_load` (also ``sb3_trpo_plugin.safe_load``): this package's model files, and those of SB3's PPO and
  A2C and sb3-contrib's TRPO (:mod:`.sb3_file`, from the readable parts of SB3's ``data`` entry: :mod:`.sb3_data`).
"""

from sb3_trpo_plugin.loading.safe_load import UnsafeModelFileError, safe_load

__all__ = ["UnsafeModelFileError", "safe_load"]
