"""Loading model files without unpickling anything: :func:`safe_load` (also ``sb3_trpo_plugin.safe_load``)."""

from sb3_trpo_plugin.loading.safe_load import UnsafeModelFileError, safe_load

__all__ = ["UnsafeModelFileError", "safe_load"]
