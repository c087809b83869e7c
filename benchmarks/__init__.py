"""
The benchmarks: speed, learning quality, data-parallel throughput, memory over a long run, against sb3-contrib and PPO.

A package of scripts, each run by module name from the repository root (``python -m benchmarks.learning run``); the
ones that start child processes start them the same way (:mod:`benchmarks.launch`). Not part of the wheel.
"""
