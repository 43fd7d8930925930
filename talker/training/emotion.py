"""Emotion directions: where a speaker's own frames move in z_sem when an emotion is on.

speech2latent learns emotion as one more input among many, and under-plays it: on the bundled
speaker its change of z_sem at intensity 1.0 covers 40–56% of the encoder's own emotion direction
for sad, angry and surprised, with as much again off that direction (``bench/emotion.py``). The
semantic encoder, though, separates emotion cleanly: a least-squares fit of the training frames'
latents on their emotion intensities (mouth opening and width, blinks and head pose held as
covariates where the clips have synthetic truth) gives one direction per emotion.
``talker add-emotion`` stores those directions in a speaker's speech2latent (``emotion_directions``),
which then shows an emotion at intensity i as z_sem + i × direction: proportional, additive for
mixes, and exactly neutral at zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TalkerError
from .data import load_dataset, split_clips


def fit_emotion_directions(data_dir: str | Path, n_emotions: int) -> tuple[np.ndarray, dict]:
    """(E, D) directions from the training clips of a prepared, encoded dataset (``talker
    encode``'s latents, per-frame emotion labels), and a record of the fit."""
    _, clips = load_dataset(data_dir)
    train, _ = split_clips(clips)
    usable = [c for c in train if c.emotion is not None and (c.path / "latents.npy").is_file()]
    if not usable:
        raise TalkerError(f"{data_dir}: no training clip has both emotion labels and latents (run `talker encode`)")
    with_truth = all((c.path / "truth.npz").is_file() for c in usable)
    rows, latents = [], []
    for c in usable:
        z = c.latents()
        n = min(len(z), c.n_frames, len(c.emotion))
        columns = [np.ones(n), c.emotion[:n, :n_emotions]]
        if with_truth:  # what else moves the face, so that it is not mistaken for emotion
            t = np.load(c.path / "truth.npz")
            columns += [t["mouth_open"][:n], t["mouth_width"][:n], t["blink"][:n], t["pose"][:n] / 10]
        rows.append(np.column_stack(columns))
        latents.append(z[:n])
    x, z = np.concatenate(rows), np.concatenate(latents)
    labels = x[:, 1 : 1 + n_emotions]
    missing = [k for k in range(n_emotions) if np.ptp(labels[:, k]) == 0]
    if missing:
        raise TalkerError(f"{data_dir}: emotion {', '.join(map(str, missing))} never varies in the training clips; "
                          "its direction cannot be fitted")
    coef, *_ = np.linalg.lstsq(x, z, rcond=None)
    fitted = 1 - (z - x @ coef).var(0).sum() / z.var(0).sum()
    record = {"method": "directions", "data": str(data_dir), "clips": len(usable), "frames": int(len(x)),
              "covariates": ["mouth_open", "mouth_width", "blink", "pose"] if with_truth else [],
              "variance_explained": round(float(fitted), 4),
              "direction_norms": np.linalg.norm(coef[1 : 1 + n_emotions], axis=1).round(3).tolist()}
    return coef[1 : 1 + n_emotions].astype(np.float32), record


def add_emotion_directions(folder: str | Path, data_dir: str | Path) -> dict:
    """Fit the directions on ``data_dir`` and store them in the speaker folder's speech2latent
    networks (offline and live); speaker.json and the model card record it. Returns the record."""
    import torch

    from ..hub import read_speaker, stored_dtype, write_speaker
    from ..models import Speech2Latent
    from ..pipelines import DAETalkerPipeline
    from .export import write_model_card

    folder = Path(folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    if not pipe.emotion_names:
        raise TalkerError(f"{folder}: this speaker has no emotion control")
    directions, record = fit_emotion_directions(data_dir, len(pipe.emotion_names))
    for name in ("speech_to_latent", "live_speech_to_latent"):
        old = getattr(pipe, name, None)
        if old is None:
            continue
        config = {k: v for k, v in old.config.items() if not k.startswith("_")}
        new = Speech2Latent(**{**config, "emotion_directions": True})
        new.load_state_dict(old.state_dict(), strict=False)  # everything but the directions
        new.set_emotion_directions(directions)
        torch.nn.Module.to(new.eval(), stored_dtype(folder / name))
        new.save_pretrained(folder / name)
    speaker = read_speaker(folder)
    speaker["emotion"] = record
    write_speaker(folder, speaker)
    write_model_card(folder, speaker=speaker)
    return record
