"""Conditions and the two denoisers (latent MLP, pixel UNet), both predicting the noise epsilon or v.

A condition is one value per conditioning variable: ``class_name`` first, then each extra attribute of the data
set (e.g. CelebA's ``Young``). ``ConditionSpace`` turns condition tables into integer codes (N, J); each
variable has one extra *null* code used for classifier-free guidance. ``ConditionEmbedding`` sums one learned
embedding per variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from fairforget.errors import ConfigError

CLASS_VARIABLE = "class_name"


@dataclass(frozen=True)
class ConditionSpace:
    """The conditioning variables (``names``, ``class_name`` first) and each one's known values, in order."""

    names: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dataset(cls, class_names: Sequence[str], manifest: pd.DataFrame, attributes: Sequence[str]) -> "ConditionSpace":
        names = (CLASS_VARIABLE, *attributes)
        values = [tuple(class_names)]
        for attribute in attributes:
            if attribute not in manifest.columns:
                raise ConfigError(f"attribute {attribute!r} is not a manifest column; columns: {list(manifest.columns)}")
            values.append(tuple(sorted(manifest[attribute].astype(str).unique())))
        return cls(tuple(names), tuple(values))

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    def encode(self, conditions: pd.DataFrame) -> np.ndarray:
        """int64 (N, J) codes of a table with one column per variable; raises ``ValueError`` for a missing column
        or an unknown value, naming the known values."""
        missing = [n for n in self.names if n not in conditions.columns]
        if missing:
            raise ConfigError(f"conditions lack the columns {missing}; the generator is conditioned on {list(self.names)}")
        codes = np.empty((len(conditions), len(self.names)), dtype=np.int64)
        for j, (name, known) in enumerate(zip(self.names, self.values)):
            index = {v: i for i, v in enumerate(known)}
            column = conditions[name].astype(str).to_numpy()
            unknown = sorted(set(column) - set(index))
            if unknown:
                raise ConfigError(f"unknown condition {name}={unknown[:5]}: the generator knows {list(known)}")
            codes[:, j] = [index[v] for v in column]
        return codes

    def null_codes(self, n: int) -> np.ndarray:
        """int64 (n, J): the null (unconditional) code of every variable."""
        return np.tile(np.array(self.cardinalities, dtype=np.int64), (n, 1))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "values": [list(v) for v in self.values]}

    @classmethod
    def from_dict(cls, record: dict) -> "ConditionSpace":
        return cls(tuple(record["names"]), tuple(tuple(v) for v in record["values"]))


class ConditionEmbedding(nn.Module):
    """codes (B, J) -> (B, dim): the sum of one embedding per variable (index ``cardinality`` = null)."""

    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(k + 1, dim) for k in cardinalities)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(table(codes[:, j]) for j, table in enumerate(self.tables))


class ResidualFiLMBlock(nn.Module):
    """h + MLP(LayerNorm(h) * (1 + scale) + shift), with (scale, shift) computed from the embedding and dropout
    (probability ``dropout``, training only) on the MLP's hidden layer."""

    def __init__(self, width: int, embedding_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(embedding_dim, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.dropout = nn.Dropout(dropout)  # no weights: the saved layout is the same with or without it

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(emb).chunk(2, dim=-1)
        first, activation, last = self.mlp
        return h + last(self.dropout(activation(first(self.norm(h) * (1 + scale) + shift))))


class LatentDenoiser(nn.Module):
    """epsilon(z_t, t, condition) for latent vectors z (B, latent_dim): a residual MLP with FiLM conditioning."""

    def __init__(self, latent_dim: int, width: int, depth: int, embedding_dim: int, cardinalities: Sequence[int],
                 dropout: float = 0.0):
        super().__init__()
        self.time_projection = Timesteps(embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(embedding_dim, embedding_dim)
        self.condition_embedding = ConditionEmbedding(cardinalities, embedding_dim)
        self.embedding_activation = nn.SiLU()
        self.input = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(ResidualFiLMBlock(width, embedding_dim, dropout) for _ in range(depth))
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, latent_dim))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, z: torch.Tensor, timesteps: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        emb = self.time_embedding(self.time_projection(timesteps).to(z.dtype)) + self.condition_embedding(codes)
        emb = self.embedding_activation(emb)
        h = self.input(z)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h)


class PixelUNetDenoiser(nn.Module):
    """epsilon(x_t, t, condition) for images x (B, C, H, W) in [-1, 1]: a diffusers ``UNet2DModel`` whose class
    embedding is our condition embedding (``class_embed_type="identity"``). Sides that the UNet's levels cannot
    halve evenly (53 with 3 levels) are zero-padded at the bottom and right to the next multiple of
    2 ** (levels - 1) on the way in and cropped back on the way out, so any image size works."""

    def __init__(self, image_shape: tuple[int, int, int], channels: Sequence[int], layers_per_block: int,
                 norm_groups: int, attention: bool, cardinalities: Sequence[int], dropout: float = 0.0):
        super().__init__()
        height, width, in_channels = image_shape
        factor = 2 ** (len(channels) - 1)
        self.image_size = (height, width)
        height, width = -(-height // factor) * factor, -(-width // factor) * factor
        levels = len(channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if attention:
            down[-1] = "AttnDownBlock2D"
            up[0] = "AttnUpBlock2D"
        time_embed_dim = channels[0] * 4
        self.unet = UNet2DModel(
            sample_size=(height, width), in_channels=in_channels, out_channels=in_channels,
            block_out_channels=tuple(channels), layers_per_block=layers_per_block, norm_num_groups=norm_groups,
            down_block_types=tuple(down), up_block_types=tuple(up), class_embed_type="identity", dropout=dropout,
        )
        self.condition_embedding = ConditionEmbedding(cardinalities, time_embed_dim)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        height, width = self.image_size
        padded_height, padded_width = self.unet.config.sample_size
        if (padded_height, padded_width) != (height, width):
            x = torch.nn.functional.pad(x, (0, padded_width - width, 0, padded_height - height))
        out = self.unet(x, timesteps, class_labels=self.condition_embedding(codes)).sample
        return out[..., :height, :width]


def draw_conditions(space: ConditionSpace, manifest: pd.DataFrame, class_counts: dict[str, int],
                    seed: int) -> pd.DataFrame:
    """A condition table with ``class_counts[c]`` rows of class c (in ``space`` class order); every extra
    attribute is drawn from its empirical distribution given the class in ``manifest`` (S), so that generated
    samples follow S's attribute mix within each class. Raises ``ValueError`` for an unknown class."""
    rng = np.random.default_rng(seed)
    unknown = sorted(set(class_counts) - set(space.values[0]))
    if unknown:
        raise ConfigError(f"unknown condition class_name={unknown}: the generator knows {list(space.values[0])}")
    parts = []
    for class_name in space.values[0]:
        n = int(class_counts.get(class_name, 0))
        if n <= 0:
            continue
        part = pd.DataFrame({CLASS_VARIABLE: [class_name] * n})
        rows = manifest[manifest[CLASS_VARIABLE].astype(str) == class_name]
        for name in space.names[1:]:
            pool = rows[name].astype(str).to_numpy() if len(rows) else np.array(space.values[space.names.index(name)])
            part[name] = rng.choice(pool, size=n)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=list(space.names))
    return pd.concat(parts, ignore_index=True)
