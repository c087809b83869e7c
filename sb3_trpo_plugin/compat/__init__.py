"""
The releases of the peers this package runs with (docs/compatibility.md lists the tested rows), behind one place.

Every difference between releases of SB3, sb3-contrib, gymnasium, NumPy and torch that the package meets is
handled here, by feature detection (an attribute or an import that exists or not), never by comparing version
numbers; each shim says which releases it serves. The rest of the package imports these names instead of reaching
for the release-dependent ones itself.

- :mod:`.schedules`: SB3's schedules, classes since SB3 2.7 and closures before.
- :mod:`.spaces`: gymnasium's spaces, whose ``Discrete`` takes a dtype since gymnasium 1.0.
- :mod:`.advantages`: the float type of SB3's GAE recursion (float64 in SB3 2.3, float32 since 2.4), by a probe.
- :mod:`.torch_features`: torch's fused Adam on the CPU (torch ≥ 2.4).
"""
