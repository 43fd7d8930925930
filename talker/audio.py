"""Audio in: any file or array → 16 kHz mono float32 (``load_audio``), which the speech front
ends (:mod:`talker.frontends`) turn into speech2latent's features.

Video runs at 25 fps and audio at 16 kHz, so one video frame is exactly 640 samples.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import torch

from .defaults import DEFAULT_MAX_DURATION, FPS, SAMPLE_RATE
from .errors import AudioError

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

AUDIO_FILE_TYPES = ("wav", "flac", "ogg", "mp3", "m4a", "webm")
MIN_SAMPLING_RATE = 4_000
MAX_SAMPLING_RATE = 384_000
MAX_PEAK = 2.0
"""Float samples are in [-1, 1]: overs up to this peak (float files, processed audio) are scaled
back into range; beyond it the numbers are not audio at that scale (e.g. int16 values as floats)."""


def samples_for_frames(wave: np.ndarray | torch.Tensor, n_frames: int) -> torch.Tensor:
    """16 kHz mono ``wave`` cut or zero-padded to exactly ``n_frames`` video frames of samples:
    (n_frames × SAMPLES_PER_FRAME,) float32."""
    n = n_frames * SAMPLES_PER_FRAME
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).flatten()[:n]
    return torch.nn.functional.pad(x, (0, n - x.numel()))


def num_frames(num_samples: int, sampling_rate: int, fps: int = FPS) -> int:
    """Video frames for ``num_samples`` of audio: duration × fps rounded half up, at least 1."""
    return max(1, int(math.floor(num_samples * fps / sampling_rate + 0.5)))


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def _decode_with_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        expected = f.frames
        data = f.read(dtype="float32", always_2d=True)
        sr = f.samplerate
        header = f.extra_info
    # libsndfile reads a truncated file up to where it ends; the header still says how long it
    # should have been, which is how a truncated upload is told from a short one.
    declared = re.search(r"^data : (\d+) \(should be (\d+)\)", header, re.MULTILINE)
    streaming_sizes = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 8)  # writers that never patch the header
    if declared and int(declared.group(1)) > int(declared.group(2)) and int(declared.group(1)) not in streaming_sizes:
        raise AudioError(
            f"{path}: audio file is truncated ({declared.group(2)} of {declared.group(1)} data bytes present)"
        )
    if expected > 0 and data.shape[0] < expected:
        raise AudioError(f"{path}: audio file is truncated ({data.shape[0]} of {expected} samples present)")
    return data, sr


def _decode_with_pyav(path: str) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        sr = None
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                sr = out.sample_rate
                chunks.append(out.to_ndarray())  # (channels, samples)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        # AAC pads its last frame; the container's (edit-list) duration says where sound ends.
        if stream.duration is not None and stream.time_base is not None:
            length = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            length = container.duration / 1e6
        else:
            length = None
    if not chunks or sr is None:
        return np.zeros((0, 1), np.float32), sr or SAMPLE_RATE
    samples = np.concatenate(chunks, axis=1).T.astype(np.float32)
    if length is not None and length > 0:
        samples = samples[: int(round(length * sr))]
    return samples, int(sr)


def decode_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file as it is stored.

    Returns ``(samples, sampling_rate)`` with samples ``(T, channels)`` float32 in [-1, 1].
    wav/flac/ogg/mp3 go through libsndfile; m4a/webm (and anything libsndfile refuses) through
    FFmpeg via PyAV. Raises :class:`AudioError` naming the file and the accepted types.
    """
    path = str(path)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise AudioError(f"expected an audio file, got a folder: {path}")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    accepted = ", ".join(AUDIO_FILE_TYPES)
    for decoder in (_decode_with_soundfile, _decode_with_pyav):
        try:
            samples, rate = decoder(path)
        except AudioError:
            raise
        except Exception:  # each library has its own error types; both are tried
            continue
        if samples.size:
            return samples, rate
    raise AudioError(
        f"{path}: not a readable audio file (corrupt or unsupported; accepted: {accepted})"
    )


# ----------------------------------------------------------------------------------------------
# Normalising to 16 kHz mono
# ----------------------------------------------------------------------------------------------


def as_float_array(audio: Any) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu")
        if audio.dtype in (torch.float16, torch.bfloat16):
            audio = audio.float()
        audio = audio.numpy()
    try:
        audio = np.asarray(audio)
    except Exception as e:
        raise AudioError(f"audio array could not be read as numbers: {e}") from None
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype == np.int32:
        return audio.astype(np.float32) / 2147483648.0
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(
            f"audio array has dtype {audio.dtype}; accepted: float32/float64, int16, int32, uint8"
        )
    return audio.astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(T,), (T, C) or (C, T) with C ≤ 8 → (T,) by averaging channels."""
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2 and samples.size == 0:
        return samples.reshape(-1)
    if samples.ndim != 2:
        raise AudioError(
            f"audio array must be 1-D (samples) or 2-D (samples × channels); got shape {samples.shape}"
        )
    if samples.shape[1] <= 8 and samples.shape[0] >= samples.shape[1]:
        return samples.mean(axis=1)
    if samples.shape[0] <= 8:
        return samples.mean(axis=0)
    raise AudioError(f"audio array shape {samples.shape} has more than 8 channels")


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a 1-D or (T, C) array."""
    if orig_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, orig_rate, target_rate, quality="HQ").astype(np.float32)


def check_sampling_rate(sampling_rate: Any) -> int:
    if isinstance(sampling_rate, float) and sampling_rate.is_integer():
        sampling_rate = int(sampling_rate)
    if isinstance(sampling_rate, (bool, np.bool_)) or not isinstance(sampling_rate, (int, np.integer)):
        raise AudioError(f"sampling_rate must be an integer number of Hz, got {sampling_rate!r}")
    if not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE:
        raise AudioError(
            f"sampling_rate {sampling_rate} Hz is outside the accepted range "
            f"{MIN_SAMPLING_RATE}–{MAX_SAMPLING_RATE} Hz"
        )
    return int(sampling_rate)


def _within_full_scale(samples: np.ndarray, name: str) -> np.ndarray:
    """Float samples scaled into [-1, 1] when they go a little over; an error when far over."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak <= 1.0:
        return samples
    if peak > MAX_PEAK:
        hint = " (integer PCM given as floats? divide by 32768, or pass the int16 array)" if peak > 100 else ""
        raise AudioError(f"{name}: samples reach {peak:.4g}; float audio is in [-1, 1] "
                         f"(up to {MAX_PEAK:g} is scaled down){hint}")
    return samples / peak


def load_audio(
    audio: str | os.PathLike | np.ndarray | torch.Tensor,
    sampling_rate: int | None = None,
    *,
    max_duration: float | None = DEFAULT_MAX_DURATION,
    fps: int = FPS,
) -> np.ndarray:
    """Load speech as 16 kHz mono float32, padded or cut to a whole number of video frames.

    Args:
        audio: a file path (wav/flac/ogg/mp3/m4a/webm), or an array/tensor of samples shaped
            (T,), (T, C) or (C, T); integer arrays are scaled to [-1, 1].
        sampling_rate: rate of ``audio`` in Hz; required for arrays, ignored for files.
        max_duration: longest accepted duration in seconds (None: no limit).
        fps: video frame rate; the result has exactly ``num_frames × 16000 / fps`` samples.

    Returns:
        ``(num_frames × 640,)`` float32 at 16 kHz (at 25 fps).

    Raises:
        AudioError: unreadable/corrupt/empty input, non-finite samples, float samples beyond
            ±``MAX_PEAK`` (a little over ±1 is scaled into range), a bad sampling rate, audio
            shorter than one frame or longer than ``max_duration``. Silence is accepted.
    """
    if isinstance(audio, (str, os.PathLike)):
        samples, rate = decode_audio_file(audio)
        name = str(audio)
    elif isinstance(audio, (np.ndarray, torch.Tensor, list, tuple)):
        if sampling_rate is None:
            raise AudioError("sampling_rate is required when audio is given as an array or tensor")
        rate = check_sampling_rate(sampling_rate)
        samples = as_float_array(audio)
        name = "audio array"
    else:
        raise AudioError(
            f"audio must be a file path, a numpy array or a torch tensor; got {type(audio).__name__}"
        )
    samples = to_mono(samples)
    if samples.size == 0:
        raise AudioError(f"{name}: contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    samples = _within_full_scale(samples, name)
    duration = samples.shape[0] / rate
    if duration < 1.0 / fps:
        raise AudioError(
            f"{name}: {duration * 1000:.1f} ms is too short; at least {1000 / fps:.0f} ms (one frame) is needed"
        )
    if max_duration is not None and duration > max_duration:
        raise AudioError(
            f"{name}: {duration:.1f} s is too long; at most {max_duration:g} s is accepted"
        )
    n = num_frames(samples.shape[0], rate, fps)
    wave = resample(samples, rate, SAMPLE_RATE)
    target = n * SAMPLE_RATE // fps
    if wave.shape[0] < target:
        wave = np.pad(wave, (0, target - wave.shape[0]))
    return np.ascontiguousarray(wave[:target], dtype=np.float32)


__all__ = [
    "SAMPLE_RATE",
    "FPS",
    "SAMPLES_PER_FRAME",
    "AUDIO_FILE_TYPES",
    "num_frames",
    "decode_audio_file",
    "load_audio",
    "to_mono",
    "resample",
]
