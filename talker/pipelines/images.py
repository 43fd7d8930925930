"""Conversions between user images and the models' [-1, 1] tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

OUTPUT_TYPES = ("np", "pil", "pt")


def preprocess_images(images: Any, size: int, device, dtype) -> torch.Tensor:
    """uint8 arrays (H, W, 3) / (B, H, W, 3), PIL images, or float tensors (B, 3, H, W) in [0, 1]
    → (B, 3, size, size) in [-1, 1], resized (antialiased) when the side differs."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"image tensors must be (B, 3, H, W) in [0, 1]; got shape {tuple(images.shape)}")
    else:
        if not isinstance(images, (list, tuple)):
            images = [images] if not (isinstance(images, np.ndarray) and images.ndim == 4) else list(images)
        arrays = []
        for im in images:
            a = np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im)
            if a.ndim != 3 or a.shape[2] != 3:
                raise InputError(f"images must be RGB (H, W, 3); got shape {a.shape}")
            arrays.append(torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1))
        if len({a.shape for a in arrays}) > 1:
            raise InputError("all images must have the same size")
        x = torch.stack(arrays)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x * 2 - 1).to(device, dtype)


def postprocess_frames(x: torch.Tensor, output_type: str):
    """(N, 3, H, W) in [-1, 1] → "np": (N, H, W, 3) uint8; "pil": list of PIL images;
    "pt": (N, 3, H, W) float32 in [0, 1]."""
    x = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
    if output_type == "pt":
        return x
    frames = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if output_type == "pil":
        from PIL import Image

        return [Image.fromarray(f) for f in frames]
    return frames


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}")
