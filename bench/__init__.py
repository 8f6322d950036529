"""Throughput benchmark of tigerwatch: one module per measurement, on a shared harness."""

# First, before anything imports torch: the daemon's OpenMP wait policy (see daemon/classify),
# so the model's CPU measured here is the CPU it costs in the daemon.
import daemon.classify  # noqa: F401
