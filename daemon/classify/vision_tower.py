"""CLIP's image tower (ViT plus projection) in plain torch: the daemon never imports transformers.

The modules and parameter names are those of transformers' CLIPVisionModelWithProjection, so a
CLIP checkpoint's `vision_model.*` and `visual_projection.*` weights load by name, and the
computation is the same, step for step, as its sdpa path: image embeddings equal it in fp32.
Importing transformers would cost the daemon about 125 MB of memory for modules (sympy, scipy,
torch._dynamo, ...) that nothing uses once the model is loaded.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from daemon.classify.checkpoint import TowerShape

# The activations CLIP checkpoints name (config.hidden_act), as transformers' ACT2FN computes them.
SUPPORTED_ACTIVATIONS = ("quick_gelu", "gelu")
_LAYER_WEIGHT = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")


class QuickGELU(nn.Module):
    """CLIP's activation, x * sigmoid(1.702 x), as transformers' QuickGELUActivation computes it;
    precision.py swaps it for an in-place version of the same operations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unsupported hidden_act {name!r} (supported: {SUPPORTED_ACTIVATIONS})")


class Embeddings(nn.Module):
    """Patches to tokens: a strided convolution, the class token, learned positions."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.image_size = shape.image_size
        self.class_embedding = nn.Parameter(torch.empty(shape.hidden_size))
        self.patch_embedding = nn.Conv2d(
            shape.num_channels,
            shape.hidden_size,
            kernel_size=shape.patch_size,
            stride=shape.patch_size,
            bias=False,
        )
        positions = (shape.image_size // shape.patch_size) ** 2 + 1
        self.position_embedding = Positions(positions, shape.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        if height != self.image_size or width != self.image_size:
            raise ValueError(
                f"input image size ({height}*{width}) does not match the model's "
                f"({self.image_size}*{self.image_size})"
            )
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(dtype=weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_embedding.expand(batch, 1, -1), patches], dim=1)
        # The embedding of positions 0..N-1 is its whole weight, in order.
        return tokens + self.position_embedding.weight.unsqueeze(0)


class Positions(nn.Module):
    """The learned position embeddings, as nn.Embedding holds them (`.weight`, one row per
    position), without nn.Embedding: its random initialisation, even on the meta device, imports
    torch's reference operators and sympy, about 70 MB for a weight that is replaced at once."""

    def __init__(self, positions: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(positions, width))


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask, through scaled_dot_product_attention."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        width = shape.hidden_size
        self.head_dim = width // shape.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        tokens = hidden.shape[:-1]
        heads = (*tokens, -1, self.head_dim)
        query = self.q_proj(hidden).view(heads).transpose(1, 2)
        key = self.k_proj(hidden).view(heads).transpose(1, 2)
        value = self.v_proj(hidden).view(heads).transpose(1, 2)
        attended = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=None, dropout_p=0.0, scale=self.scale, is_causal=False
        )
        attended = attended.transpose(1, 2).contiguous().reshape(*tokens, -1).contiguous()
        out: torch.Tensor = self.out_proj(attended)
        return out


class Mlp(nn.Module):
    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.activation_fn = _activation(shape.hidden_act)
        self.fc1 = nn.Linear(shape.hidden_size, shape.intermediate_size)
        self.fc2 = nn.Linear(shape.intermediate_size, shape.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.activation_fn(self.fc1(hidden)))
        return out


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.self_attn = SelfAttention(shape)
        self.layer_norm1 = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.mlp = Mlp(shape)
        self.layer_norm2 = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden))
        out: torch.Tensor = hidden + self.mlp(self.layer_norm2(hidden))
        return out


class Encoder(nn.Module):
    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(shape) for _ in range(shape.num_hidden_layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


class VisionTransformer(nn.Module):
    """transformers' CLIPVisionTransformer: its output is the normalised class token."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.embeddings = Embeddings(shape)
        self.pre_layrnorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.encoder = Encoder(shape)
        self.post_layernorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        pooled: torch.Tensor = self.post_layernorm(hidden[:, 0, :])
        return pooled


class ClipVisionTower(nn.Module):
    """Pixels (N, C, S, S) to projected image embeddings (N, projection_dim), not normalised:
    CLIPVisionModelWithProjection's image_embeds."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.shape = shape
        self.vision_model = VisionTransformer(shape)
        self.visual_projection = nn.Linear(shape.hidden_size, shape.projection_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds: torch.Tensor = self.visual_projection(self.vision_model(pixel_values))
        return embeds


def build_tower(shape: TowerShape, weights: dict[str, torch.Tensor]) -> ClipVisionTower:
    """The tower with `weights` (every parameter's name, as in the checkpoint) as its parameters,
    not copies: memory-mapped weights stay file pages. Built on the meta device, so no random
    initial weights are ever allocated. Raises KeyError listing the names `weights` lacks, and
    ValueError when `weights` has encoder layers the config does not: a tower built without
    them would run, silently, as another model."""
    _check_no_surplus_layers(shape, weights)
    with torch.device("meta"):
        tower = ClipVisionTower(shape)
    wanted = dict(tower.state_dict())
    missing = sorted(name for name in wanted if name not in weights)
    if missing:
        raise KeyError(missing)
    tower.load_state_dict({name: weights[name] for name in wanted}, strict=True, assign=True)
    tower.requires_grad_(False)
    return tower.eval()


def _check_no_surplus_layers(shape: TowerShape, weights: dict[str, torch.Tensor]) -> None:
    layers = {int(m.group(1)) for name in weights if (m := _LAYER_WEIGHT.match(name))}
    if layers and max(layers) >= shape.num_hidden_layers:
        raise ValueError(
            f"the checkpoint has {max(layers) + 1} encoder layers but its vision config "
            f"num_hidden_layers is {shape.num_hidden_layers}"
        )
