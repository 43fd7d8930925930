"""``talker encode``: the EMA encoder's latents of every frame of a dataset, the targets of
``talker train s2l`` (and the latents ``talker train distill`` decodes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import TalkerError
from .dae import load_dae
from .data import load_dataset
from .runs import to_model


@torch.no_grad()
def encode_dataset(data_dir: str | Path, dae_run: str | Path, batch_size: int = 64, progress: bool = True) -> dict:
    """EMA-encoder latents of every frame → DATA/clips/<id>/latents.npy, and their per-dimension
    mean/std → DATA/latents.json."""
    from tqdm.auto import tqdm

    encoder, _, _ = load_dae(dae_run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = encoder.to(device).eval()
    _, clips = load_dataset(data_dir)
    all_z = []
    for clip in tqdm(clips, desc="encoding", unit="clip", disable=not progress):
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)
        if frames.shape[-1] != encoder.config.sample_size:
            raise TalkerError(f"the dataset is {frames.shape[-1]}px but the DAE is {encoder.config.sample_size}px")
        z = torch.cat([encoder(to_model(frames[i : i + batch_size]).to(device)).cpu()
                       for i in range(0, len(frames), batch_size)]).numpy().astype(np.float32)
        np.save(clip.path / "latents.npy", z)
        all_z.append(z)
    z = np.concatenate(all_z)
    stats = {"dae": str(Path(dae_run).resolve()), "z_dim": int(z.shape[1]), "frames": int(len(z)),
             "mean": z.mean(0).tolist(), "std": z.std(0).tolist()}
    (Path(data_dir) / "latents.json").write_text(json.dumps(stats) + "\n")
    return stats
