"""The plain-torch image tower against transformers' own, and how its weights are loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPVisionModelWithProjection

from daemon.classify.checkpoint import CheckpointParts
from daemon.classify.classifier import ClipClassifier
from daemon.classify.errors import ModelLoadError
from daemon.classify.loader_process import load_checkpoint
from daemon.classify.precision import InPlaceQuickGELU, prepare_image_tower
from daemon.classify.tower_weights import load_tower
from daemon.classify.vision_tower import ClipVisionTower
from tests.daemon_support import REPO_ROOT

CPU = torch.device("cpu")
MISSING_WEIGHT = "vision_model.encoder.layers.1.mlp.fc2.weight"


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path) -> CheckpointParts:
    return load_checkpoint(str(tiny_model_dir), ("a photo of a tiger",))


def reference_tower(model_dir: Path) -> CLIPVisionModelWithProjection:
    """transformers' own image tower, configured as loading.py configures it."""
    config = CLIPConfig.from_pretrained(str(model_dir))
    config.vision_config.projection_dim = config.projection_dim
    model: CLIPVisionModelWithProjection = CLIPVisionModelWithProjection.from_pretrained(
        str(model_dir), config=config.vision_config
    )
    return model.eval()


def pixels(count: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(count, 3, 224, 224, generator=generator) * 1.5


def embeds(model: torch.nn.Module, values: torch.Tensor, *, bf16: bool = False) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(values)
        result: torch.Tensor = (out if isinstance(out, torch.Tensor) else out.image_embeds).float()
    return result


def test_fp32_image_embeddings_equal_transformers(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    values = pixels()
    tower = load_tower(str(tiny_model_dir), parts)
    expected = embeds(reference_tower(tiny_model_dir), values)

    got = embeds(tower, values)

    assert got.shape == expected.shape == (len(values), parts.tower.projection_dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_in_place_activation_changes_nothing(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    values = pixels()
    plain = embeds(load_tower(str(tiny_model_dir), parts), values)
    prepared = prepare_image_tower(load_tower(str(tiny_model_dir), parts), "fp32", CPU)

    assert any(isinstance(m, InPlaceQuickGELU) for m in prepared.modules())
    torch.testing.assert_close(embeds(prepared, values), plain, rtol=0, atol=0)


def test_bf16_stays_close_to_transformers_in_bf16(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    values = pixels()
    tower = prepare_image_tower(load_tower(str(tiny_model_dir), parts), "bf16", CPU)
    reference = reference_tower(tiny_model_dir)

    got = embeds(tower, values, bf16=True)

    torch.testing.assert_close(got, embeds(reference, values, bf16=True), rtol=0.02, atol=0.02)
    assert not torch.equal(got, embeds(reference, values))  # bf16 really ran


def test_int8_stays_close_to_transformers_quantised_alike(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    values = pixels()
    tower = prepare_image_tower(load_tower(str(tiny_model_dir), parts), "int8", CPU)
    reference = prepare_image_tower(reference_tower(tiny_model_dir), "int8", CPU)

    assert not [m for m in tower.modules() if type(m) is torch.nn.Linear]
    got = embeds(tower, values)
    torch.testing.assert_close(got, embeds(reference, values), rtol=0.02, atol=0.02)
    fp32 = embeds(load_tower(str(tiny_model_dir), parts), values)
    assert not torch.equal(got, fp32)  # quantised weights moved every embedding a little


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process that map `path` (from /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]) == path:
            start, end = (int(value, 16) for value in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_the_weights_are_the_mapped_file_not_copies(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    tower = load_tower(str(tiny_model_dir), parts)

    ranges = mapped_ranges(Path(parts.weights_path).resolve())
    outside = [
        name
        for name, weight in tower.state_dict().items()
        if not any(start <= weight.data_ptr() < end for start, end in ranges)
    ]
    assert ranges, f"{parts.weights_path} is not mapped"
    assert outside == []


def copy_without(model_dir: Path, folder: Path, key: str) -> Path:
    shutil.copytree(model_dir, folder)
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        kept = {name: weights.get_tensor(name) for name in weights.keys() if name != key}  # noqa: SIM118
    save_file(kept, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_a_missing_vision_weight_is_a_load_error_naming_model_and_weight(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    folder = copy_without(tiny_model_dir, tmp_path / "lacks-a-weight", MISSING_WEIGHT)

    with pytest.raises(ModelLoadError) as error:
        ClipClassifier.load(str(folder), default_labels, default_targets)

    message = str(error.value)
    assert f"Cannot load CLIP model {str(folder)!r}" in message
    assert MISSING_WEIGHT in message
    assert "tigerwatch download-model" in message


def test_a_vision_config_that_does_not_fit_the_weights_is_a_load_error(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    wider = CheckpointParts(
        **{**vars(parts), "tower": type(parts.tower)(**{**vars(parts.tower), "hidden_size": 48})}
    )

    with pytest.raises(ModelLoadError, match="do not load"):
        load_tower(str(tiny_model_dir), wider)


def test_a_vision_config_with_fewer_layers_than_the_weights_is_a_load_error(
    tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    # Every weight the shorter tower asks for is there: only the surplus can tell.
    shorter = CheckpointParts(
        **{
            **vars(parts),
            "tower": type(parts.tower)(**{**vars(parts.tower), "num_hidden_layers": 1}),
        }
    )

    with pytest.raises(ModelLoadError, match="2 encoder layers but its vision config"):
        load_tower(str(tiny_model_dir), shorter)


def test_a_pytorch_model_bin_checkpoint_gives_the_same_embeddings(
    tmp_path: Path, tiny_model_dir: Path, parts: CheckpointParts
) -> None:
    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as weights:
        state = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118
    torch.save(state, folder / "pytorch_model.bin")

    from_bin = load_checkpoint(str(folder), ("a photo of a tiger",))

    assert from_bin.weights_path.endswith("pytorch_model.bin")
    values = pixels(3)
    torch.testing.assert_close(
        embeds(load_tower(str(folder), from_bin), values),
        embeds(load_tower(str(tiny_model_dir), parts), values),
        rtol=0,
        atol=0,
    )


def test_the_tower_keeps_transformers_parameter_names(parts: CheckpointParts) -> None:
    with torch.device("meta"):
        tower = ClipVisionTower(parts.tower)
    with safe_open(parts.weights_path, "pt") as weights:
        vision_keys = {k for k in weights.keys() if k.startswith(("vision_model.", "visual_"))}  # noqa: SIM118

    assert set(tower.state_dict()) == vision_keys


def test_the_daemon_process_never_imports_transformers(tiny_model_dir: Path) -> None:
    """The point of it all: loading and classifying leave transformers (and what it drags in:
    sympy, scipy) out of the process. A fresh interpreter, as the daemon is one."""
    script = (
        "import sys, json, numpy as np\n"
        "import daemon.service\n"
        "from daemon.classify.classifier import ClipClassifier\n"
        f"c = ClipClassifier.load({str(tiny_model_dir)!r}, ['a tiger', 'a cat'], [True, False],"
        " view='crops')\n"
        "c.classify_pixels([np.zeros((2, 224, 224, 3), np.uint8)])\n"
        "print(json.dumps(sorted({'transformers', 'sympy', 'scipy'} & set(sys.modules))))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []
