"""Emotion directions (talker.training.emotion): fitted on a speaker's own latents, stored in its
speech2latent, shown in proportion."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import Z_DIM, speech_like

from talker.errors import TalkerError


def encoded_dataset(root, directions, clips=10, frames=60, seed=0):
    """A prepared dataset whose latents move by intensity × ``directions`` (plus noise)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=Z_DIM)
    entries = []
    for k in range(clips):
        path = root / "clips" / f"c{k}"
        path.mkdir(parents=True)
        emotion = np.zeros((frames, 4), np.float32)
        if k % 5:  # one emotion per clip at a random intensity; every fifth clip neutral
            emotion[:, k % 4] = rng.uniform(0.2, 1.0)
        latents = base + emotion @ directions + 0.05 * rng.normal(size=(frames, Z_DIM))
        np.save(path / "emotion.npy", emotion)
        np.save(path / "latents.npy", latents.astype(np.float32))
        np.save(path / "pose.npy", np.zeros((frames, 3), np.float32))
        entries.append({"id": f"c{k}", "frames": frames})
    (root / "dataset.json").write_text(json.dumps({"fps": 25, "clips": entries}))
    return root


def test_directions_are_recovered_from_the_latents(tmp_path):
    from talker.training.emotion import fit_emotion_directions

    truth = np.random.default_rng(1).normal(size=(4, Z_DIM))
    fitted, record = fit_emotion_directions(encoded_dataset(tmp_path / "data", truth, clips=20), 4)
    assert fitted.shape == (4, Z_DIM) and np.abs(fitted - truth).max() < 0.1 * np.abs(truth).max()
    assert record["clips"] == 18 and record["covariates"] == []  # two clips held out; no synthetic truth
    neutral_only = encoded_dataset(tmp_path / "flat", np.zeros((4, Z_DIM)))
    for k in range(10):
        np.save(neutral_only / "clips" / f"c{k}" / "emotion.npy", np.zeros((60, 4), np.float32))
    with pytest.raises(TalkerError, match="never varies"):
        fit_emotion_directions(neutral_only, 4)


def test_add_emotion_makes_the_speaker_show_intensity_along_its_directions(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.cli import main as talker

    folder = tmp_path / "speaker"
    shutil.copytree(speaker_dir, folder)
    truth = np.random.default_rng(2).normal(size=(4, Z_DIM))
    data = encoded_dataset(tmp_path / "data", truth, clips=20)
    assert talker(["add-emotion", str(folder), "--data", str(data)]) == 0
    pipe = DAETalkerPipeline.from_pretrained(folder)
    assert pipe.speech_to_latent.config.emotion_directions
    assert json.loads((folder / "speaker.json").read_text())["emotion"]["frames"] == 18 * 60
    assert "Emotion: intensity × each emotion's direction" in (folder / "README.md").read_text()
    audio = speech_like(1.0)

    def latents(emotion):
        return pipe(audio, sampling_rate=16000, num_inference_steps=1, emotion=emotion,
                    generator=torch.Generator().manual_seed(0)).latents

    neutral = latents(None)
    direction = pipe.speech_to_latent.emotion_direction.numpy()
    assert np.allclose(latents([0, 0, 0, 0]), neutral, atol=1e-5)
    for e in ([0.5, 0, 0, 0], [0, 0, 1.0, 0], [0.5, 0, 0, 0.5]):
        assert np.allclose(latents(e) - neutral, np.asarray(e) @ direction, atol=1e-4)
