"""The weights file a running model maps: noticed when it is rewritten, replaced or removed.

The image tower's weights are pages of the checkpoint file itself (tower_weights.py). A file
overwritten in place (`cp` or `rsync --inplace` over it) changes the model under the daemon
without a word, and the revision recorded with each result no longer names the weights that
made it; a file replaced by a rename leaves the daemon on the old weights until it restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.file_signature import Signature, file_signature


@dataclass(frozen=True)
class WeightsFile:
    path: str
    signature: Signature | None  # at load

    @classmethod
    def of(cls, path: str) -> WeightsFile:
        # Followed: a hub cache's snapshot names its weights through a link to the blob.
        return cls(path, file_signature(path, follow_symlinks=True))

    def changed(self) -> str | None:
        """How the file differs from the one loaded (None: it does not, or was never read)."""
        if self.signature is None:
            return None
        now = file_signature(self.path, follow_symlinks=True)
        if now is None:
            return "was removed"
        if now[:2] != self.signature[:2]:
            return "was replaced by another file"
        if now != self.signature:
            return "was rewritten in place"
        return None
