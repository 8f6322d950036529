"""model.threads holds outside the daemon too: `tigerwatch classify` runs the model on them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
import yaml

from daemon.classify.classifier import Classification, ClipClassifier
from daemon.cli import main
from tests.daemon_support import noise_jpeg, write_file


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_classify_runs_the_model_on_model_threads(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tigerwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "paths": {
                    "inbox": "inbox",
                    "review": "review",
                    "archive": "archive",
                    "quarantine": "quarantine",
                },
                "model": {"name_or_path": str(tiny_model_dir), "threads": 1},
            }
        )
    )
    frame = write_file(tmp_path / "frame.jpg", noise_jpeg(3))
    seen: list[int] = []
    classify_pixels = ClipClassifier.classify_pixels

    def counting(
        self: ClipClassifier,
        pixels: Sequence[npt.NDArray[np.uint8]],
        infrared: Sequence[bool] | None = None,
    ) -> list[Classification]:
        seen.append(torch.get_num_threads())
        return classify_pixels(self, pixels, infrared)

    monkeypatch.setattr(ClipClassifier, "classify_pixels", counting)
    # Two before the command, so that the test fails on a one-core machine too when the
    # command leaves torch's threads as it found them.
    torch.set_num_threads(2)

    assert main(["classify", "-c", str(config), str(frame)]) == 0

    assert seen == [1]
