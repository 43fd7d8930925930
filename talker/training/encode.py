"""``talker encode``: the EMA encoder's latents of every frame of a dataset, the targets of
``talker train s2l`` (and the latents ``talker train distill`` decodes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import TalkerError
from .dae import load_dae
from .data import load_dataset
from .runs import to_model


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A short hash of the encoder's weights: latents made by other weights are not reused."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_dataset(data_dir: str | Path, dae_run: str | Path, batch_size: int = 64, progress: bool = True) -> dict:
    """EMA-encoder latents of every frame → DATA/clips/<id>/latents.npy, and their per-dimension
    mean/std → DATA/latents.json. Run again after ``talker prepare`` added videos, it encodes only
    the new clips (those of an earlier run by the same encoder weights are kept)."""
    from tqdm.auto import tqdm

    encoder, _, _ = load_dae(dae_run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = encoder.to(device).eval()
    fingerprint = encoder_fingerprint(encoder)
    stats_path = Path(data_dir) / "latents.json"
    earlier = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    same_encoder = earlier.get("encoder") == fingerprint
    _, clips = load_dataset(data_dir)
    all_z = []
    reused = 0
    for clip in tqdm(clips, desc="encoding", unit="clip", disable=not progress):
        cached = clip.path / "latents.npy"
        if same_encoder and cached.exists():
            z = np.load(cached)
            if len(z) == clip.n_frames:
                all_z.append(z)
                reused += 1
                continue
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)
        if frames.shape[-1] != encoder.config.sample_size:
            raise TalkerError(f"the dataset is {frames.shape[-1]}px but the DAE is {encoder.config.sample_size}px")
        z = torch.cat([encoder(to_model(frames[i : i + batch_size]).to(device)).cpu()
                       for i in range(0, len(frames), batch_size)]).numpy().astype(np.float32)
        np.save(cached, z)
        all_z.append(z)
    z = np.concatenate(all_z)
    stats = {"dae": str(Path(dae_run).resolve()), "encoder": fingerprint, "z_dim": int(z.shape[1]),
             "frames": int(len(z)), "reused_clips": reused, "mean": z.mean(0).tolist(), "std": z.std(0).tolist()}
    stats_path.write_text(json.dumps(stats) + "\n")
    return stats
