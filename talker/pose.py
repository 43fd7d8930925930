"""Head-pose sequences: yaw, pitch, roll in degrees, one row per 25 fps frame."""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError

POSE_FILE_TYPES = (".csv", ".npy")
MAX_POSE_DEG = 90.0
"""Largest accepted |yaw|, |pitch| or |roll| (degrees): beyond it the face turns away."""


def check_pose_range(pose: np.ndarray, what: str = "pose") -> None:
    """Raise :class:`InputError` unless every angle is finite and within ±``MAX_POSE_DEG``."""
    pose = np.asarray(pose, dtype=np.float64)
    if not np.isfinite(pose).all():
        raise InputError(f"{what} contains NaN or infinite values")
    if pose.size and np.abs(pose).max() > MAX_POSE_DEG:
        worst = pose.flat[np.abs(pose).argmax()]
        raise InputError(f"{what}: angles are degrees within ±{MAX_POSE_DEG:g} (yaw, pitch, roll); got {worst:g}")


def load_pose_file(path: str | os.PathLike) -> np.ndarray:
    """Read a pose sequence (M, 3) in degrees from .csv (yaw,pitch,roll columns; a header row is
    allowed) or .npy (float array, never unpickled)."""
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in POSE_FILE_TYPES:
        raise InputError(f"{path}: pose files must be {' or '.join(POSE_FILE_TYPES)}")
    if not os.path.isfile(path):
        raise InputError(f"pose file not found: {path}")
    try:
        if ext == ".npy":
            pose = np.load(path, allow_pickle=False)
        else:
            with open(path) as f:
                lines = [line for line in f if line.strip()]
            if lines and not _is_numeric_row(lines[0]):
                lines = lines[1:]
            pose = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable pose file ({e})") from None
    pose = np.asarray(pose, dtype=np.float32)
    if pose.ndim != 2 or pose.shape[1] != 3 or pose.shape[0] < 1:
        raise InputError(f"{path}: a pose sequence is (frames, 3) yaw, pitch, roll in degrees; got shape {pose.shape}")
    check_pose_range(pose, path)
    return pose


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
        return True
    except ValueError:
        return False
