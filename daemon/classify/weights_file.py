"""The weights file a running model maps: noticed when it is rewritten, replaced or removed.

The image tower's weights are pages of the checkpoint file itself (tower_weights.py). A file
overwritten in place (`cp` or `rsync --inplace` over it) changes the model under the daemon
without a word, and the revision recorded with each result no longer names the weights that
made it; a file replaced by a rename leaves the daemon on the old weights until it restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsFile:
    path: str
    signature: tuple[int, int, int, int] | None  # device, inode, size, mtime (ns) at load

    @classmethod
    def of(cls, path: str) -> WeightsFile:
        return cls(path, _signature(path))

    def changed(self) -> str | None:
        """How the file differs from the one loaded (None: it does not, or was never read)."""
        if self.signature is None:
            return None
        now = _signature(self.path)
        if now is None:
            return "was removed"
        if now[:2] != self.signature[:2]:
            return "was replaced by another file"
        if now != self.signature:
            return "was rewritten in place"
        return None


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
