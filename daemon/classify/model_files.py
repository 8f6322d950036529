"""What a CLIP model folder must hold, and the digest of its weights (no torch needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")
HASH_CHUNK_BYTES = 1 << 20
# Each need, and the file names any one of which meets it (transformers' own names).
REQUIRED_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "config": (("config.json",),),
    "weights": (("model.safetensors",), ("pytorch_model.bin",)),
    "tokenizer": (("tokenizer.json",), ("vocab.json", "merges.txt")),
    "image processor": (("preprocessor_config.json",), ("processor_config.json",)),
}


def missing_parts(folder: Path) -> list[str]:
    """The needs of REQUIRED_FILES that no set of files in `folder` meets, e.g. ["weights"]."""
    return [
        need
        for need, alternatives in REQUIRED_FILES.items()
        if not any(all((folder / name).is_file() for name in names) for names in alternatives)
    ]


def weights_digest(folder: Path) -> str:
    """The revision a folder's classifications record: a hash of its weight files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"
