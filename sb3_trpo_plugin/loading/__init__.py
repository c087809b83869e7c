"""
Loading model files and ``VecNormalize`` statistics without unpickling anything.

- :func:`safe_load` (also ``sb3_trpo_plugin.safe_load``): this package's model files, and those of SB3's PPO and
  A2C and sb3-contrib's TRPO (:mod:`.sb3_file`, from the readable parts of SB3's ``data`` entry: :mod:`.sb3_data`);
- :func:`safe_load_vec_normalize`: ``VecNormalize`` statistics, from this package's pickle-free ``.npz`` or SB3's
  ``.pkl`` through a restricted unpickler (:mod:`.vec_normalize`); :func:`read_statistics_file` reads the same
  files without an environment to wrap.
"""

from sb3_trpo_plugin.loading.safe_load import UnsafeModelFileError, safe_load
from sb3_trpo_plugin.loading.vec_normalize import UnsafeStatisticsFileError, read_statistics_file, safe_load_vec_normalize

__all__ = ["UnsafeModelFileError", "UnsafeStatisticsFileError", "read_statistics_file", "safe_load", "safe_load_vec_normalize"]
