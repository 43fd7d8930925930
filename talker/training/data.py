"""Reading a prepared dataset (``talker prepare``) for training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import TalkerError
from ..video import iter_frames


@dataclass
class Clip:
    """One prepared clip: frames (N, R, R, 3) uint8 (loaded on demand), audio (N·640,) at 16 kHz,
    pose (N, 3) degrees, emotion (N, 4) or None, latents (N, D) or None."""

    id: str
    path: Path
    n_frames: int
    pose: np.ndarray
    emotion: np.ndarray | None
    _frames: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            self._frames = np.stack(list(iter_frames(self.path / "frames.mp4")))[: self.n_frames]
        return self._frames

    @property
    def audio(self) -> np.ndarray:
        return sf.read(self.path / "audio.wav", dtype="float32")[0]

    def has_frames_at(self, resolution: int) -> bool:
        """Whether the clip keeps its crops at ``resolution`` too (``talker prepare --refiner-resolution``)."""
        return (self.path / f"frames_{resolution}.mp4").is_file()

    def frames_at(self, resolution: int) -> np.ndarray:
        """The clip's crops at ``resolution`` (``talker prepare --refiner-resolution``), (N, R, R, 3) uint8."""
        path = self.path / f"frames_{resolution}.mp4"
        if not path.is_file():
            raise TalkerError(f"{path} is missing: prepare the videos with --refiner-resolution {resolution}")
        return np.stack(list(iter_frames(path)))[: self.n_frames]

    def latents(self, name: str = "latents.npy") -> np.ndarray:
        path = self.path / name
        if not path.is_file():
            raise TalkerError(f"{path} is missing: run `talker encode` first")
        return np.load(path, allow_pickle=False)


def load_dataset(data_dir: str | Path) -> tuple[dict, list[Clip]]:
    """``dataset.json`` and its clips. Raises TalkerError for a folder that is not a dataset."""
    root = Path(data_dir)
    index_path = root / "dataset.json"
    if not index_path.is_file():
        raise TalkerError(f"{root} is not a prepared dataset (no dataset.json); run `talker prepare` first")
    index = json.loads(index_path.read_text())
    clips = []
    for entry in index["clips"]:
        path = root / "clips" / entry["id"]
        emotion = np.load(path / "emotion.npy") if (path / "emotion.npy").is_file() else None
        clips.append(Clip(entry["id"], path, int(entry["frames"]), np.load(path / "pose.npy"), emotion))
    if not clips:
        raise TalkerError(f"{root} has no clips")
    return index, clips


def split_clips(clips: list[Clip], held_out: float = 0.1) -> tuple[list[Clip], list[Clip]]:
    """Deterministic train / held-out split by clip: every (1/held_out)-th clip, at least one."""
    if len(clips) < 2:
        return clips, []
    step = max(2, int(round(1 / held_out)))
    held = [c for i, c in enumerate(clips) if i % step == step - 1] or clips[-1:]
    return [c for c in clips if c not in held], held
