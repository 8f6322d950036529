"""Classification: CLIP, the only torch/transformers user, and the one-shot classify command."""

import os

# Set before torch loads its OpenMP runtime (libgomp reads it once, at load; every torch import
# in the daemon comes through this package). The decoder processes share the cores with torch's
# threads, so a thread that waits at the end of an operation would, by default, spin while the
# other is descheduled: measured here with the cores busy, the model took 176-195 ms of CPU per
# image in bf16 spinning and 53-56 ms asleep (PASSIVE), and ran 4x faster. A station's own
# setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
