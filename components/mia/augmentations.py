"""The N fixed augmentations every audited image is queried under (Yu et al., AAAI 2021, Sec. 4).

The attacks of Yu et al. look at the losses l_1..l_N of N *fixed* augmented copies of a record. Fixed means the
same N transformations for every image and every model, drawn once from a seed, so that two audits with the same
seed query exactly the same pixels.

The family is the one the classifiers train with (``components/training.py``, ``TrainConfig(augment=True)``):
horizontal flip and a crop with ``padding`` px of zero padding (equivalently a shift of up to ``padding`` px in each
direction, the uncovered border filled with zeros). Copy 0 is always the identity (the image itself, which the
M-Loss and metric attacks use) and copy 1, when N >= 2, is the plain flip; the others are distinct (flip, dy, dx)
draws. Yu et al.'s own list adds rotation, shear and cutout; we keep to the training family because an attacker
gains most from the transformations the model was trained to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairforget.errors import ConfigError


@dataclass(frozen=True)
class FixedAugmentation:
    """Flip horizontally (first) when ``flip``, then shift by (``dy``, ``dx``) px, zero-filling the border.

    A shift of (dy, dx) is the crop at offset (padding + dy, padding + dx) of the image zero-padded by ``padding``.
    """

    flip: bool
    dy: int
    dx: int

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> uint8 (N, H, W, C); a new array, the input is left untouched."""
        out = images[:, :, ::-1, :] if self.flip else images
        if self.dy == 0 and self.dx == 0:
            return np.ascontiguousarray(out)
        height, width = images.shape[1:3]
        shifted = np.zeros_like(images)
        # output pixel (y, x) reads input pixel (y + dy, x + dx) where that lies inside the image
        src_y = slice(max(self.dy, 0), height + min(self.dy, 0))
        dst_y = slice(max(-self.dy, 0), height + min(-self.dy, 0))
        src_x = slice(max(self.dx, 0), width + min(self.dx, 0))
        dst_x = slice(max(-self.dx, 0), width + min(-self.dx, 0))
        shifted[:, dst_y, dst_x, :] = out[:, src_y, src_x, :]
        return shifted

    def describe(self) -> str:
        return f"{'flip+' if self.flip else ''}shift({self.dy},{self.dx})"


def make_fixed_augmentations(count: int = 10, padding: int = 4, seed: int = 0) -> list[FixedAugmentation]:
    """``count`` distinct fixed augmentations: identity, flip, then seeded (flip, dy, dx) with |dy|, |dx| <= padding.

    Guarantees: element 0 is the identity; the list depends only on (count, padding, seed); no two are equal.
    Raises ``ValueError`` when ``count`` exceeds the 2 * (2 * padding + 1)^2 distinct transformations.
    """
    if count < 1:
        raise ConfigError(f"count must be >= 1 (copy 0 is the image itself), got {count}")
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}")
    available = 2 * (2 * padding + 1) ** 2
    if count > available:
        raise ConfigError(f"only {available} distinct flip/shift augmentations exist with padding {padding}; "
                          f"ask for at most that many or raise the padding")
    chosen = [FixedAugmentation(False, 0, 0), FixedAugmentation(True, 0, 0)][:count]
    rng = np.random.default_rng(seed)
    while len(chosen) < count:
        flip, dy, dx = bool(rng.integers(2)), int(rng.integers(-padding, padding + 1)), int(rng.integers(-padding, padding + 1))
        candidate = FixedAugmentation(flip, dy, dx)
        if candidate not in chosen:
            chosen.append(candidate)
    return chosen
