"""The speech front ends: 16 kHz samples → the features speech2latent hears, one registry.

Each front end turns the audio of ``n_frames`` video frames into exactly
``n_frames × feature_rate / 25`` feature rows:

- ``mel``: log-mel spectrogram at 100 Hz (80 bins, 25-ms windows), no weights;
- ``wav2vec2``: a frozen wav2vec2 model's hidden states at 50 Hz (``audio_encoder``).

With ``voice_activity`` in the speech2latent's config, Silero VAD's P(speech) (:mod:`talker.vad`)
follows as one more channel. :func:`speech_features` is what the pipeline, training and
evaluation all call, reading the front end's settings from the speech2latent's config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .defaults import FPS, SAMPLE_RATE
from .errors import CheckpointError, InputError

# torch, numpy and the VAD are imported where they are used: the CLI reads FRONTENDS at start-up
if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class FrontEnd:
    """One front end: its features per second and whether it needs an audio encoder model."""

    name: str
    feature_rate: int
    needs_encoder: bool
    features: Callable[..., "torch.Tensor"]


def speech_features(wave: np.ndarray | torch.Tensor, n_frames: int, config: Any, audio_encoder: Any = None,
                    feature_extractor: Any = None) -> torch.Tensor:
    """Features of 16 kHz mono ``wave`` covering ``n_frames`` video frames, as the speech2latent
    with ``config`` (its config, or a training config with ``audio_frontend``, ``mel_floor`` and
    ``voice_activity``) hears them: (n_frames × feature_rate / 25, feature_dim [+ 1]), with
    P(speech) last where it takes voice activity."""
    feats = audio_features(wave, n_frames, config, audio_encoder, feature_extractor)
    if not _getter(config)("voice_activity", False):
        return feats
    from .vad import append_voice_activity

    return append_voice_activity(feats, wave, n_frames)


def audio_features(wave: np.ndarray | torch.Tensor, n_frames: int, config: Any, audio_encoder: Any = None,
                   feature_extractor: Any = None) -> torch.Tensor:
    """:func:`speech_features` without the voice activity channel: the front end's features alone."""
    get = _getter(config)
    frontend = frontend_named(get("audio_frontend", "mel"))
    if frontend.needs_encoder and audio_encoder is None:
        raise CheckpointError(f"the {frontend.name} front end needs its audio encoder (audio_encoder/), and there is none")
    return frontend.features(wave, n_frames, get, audio_encoder, feature_extractor)


def _getter(config: Any) -> Callable[..., Any]:
    return config.get if isinstance(config, Mapping) else (lambda key, default=None: getattr(config, key, default))


def frontend_named(name: str) -> FrontEnd:
    if name not in FRONTENDS:
        raise InputError(f"the audio front end must be one of {', '.join(FRONTENDS)}; got {name!r}")
    return FRONTENDS[name]


_MEL_CACHE: dict[tuple, "torch.Tensor"] = {}


def _mel_filters(n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    key = (n_fft, n_mels, f_min, f_max)
    if key not in _MEL_CACHE:
        import numpy as np
        import torch
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=f_min,
            max_frequency=f_max,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        _MEL_CACHE[key] = torch.from_numpy(fb.astype(np.float32))  # (freq, mels)
    return _MEL_CACHE[key]


def log_mel(
    wave: np.ndarray | torch.Tensor,
    n_frames: int,
    *,
    n_mels: int = 80,
    n_fft: int = 400,
    hop_length: int = 160,
    f_min: float = 0.0,
    f_max: float = 8000.0,
    floor: float = 1e-5,
) -> torch.Tensor:
    """Log-mel spectrogram at 100 Hz (hop 160 at 16 kHz), exactly ``4 × n_frames`` long.

    Args:
        wave: 16 kHz mono samples, (T,).
        n_frames: video frames the features must cover (25 fps).

    Returns:
        ``(4 × n_frames, n_mels)`` float32, natural log of mel power floored at ``floor``.
    """
    import torch

    x = torch.as_tensor(wave, dtype=torch.float32).flatten()
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop_length, window=window, center=True, return_complex=True)
    power = spec.abs().pow(2).T  # (time, freq)
    mel = power @ _mel_filters(n_fft, n_mels, f_min, f_max)
    feats = torch.log(mel.clamp_min(floor))
    return fit_length(feats, n_frames * (SAMPLE_RATE // hop_length) // FPS)


def fit_length(feats: torch.Tensor, length: int) -> torch.Tensor:
    """Cut or edge-pad (T, F) features along time to exactly ``length`` rows."""
    import torch

    if feats.shape[0] >= length:
        return feats[:length]
    pad = feats[-1:].expand(length - feats.shape[0], -1)
    return torch.cat([feats, pad], dim=0)


def wav2vec2_features(
    wave: np.ndarray,
    n_frames: int,
    audio_encoder: torch.nn.Module,
    feature_extractor: Any | None = None,
    *,
    feature_rate: int = 50,
) -> torch.Tensor:
    """Frozen wav2vec2 hidden states, resampled in time to ``feature_rate`` Hz.

    The real base model gives 50 Hz (stride 320); other configs (tiny test ones) are linearly
    interpolated so the result is always ``n_frames × feature_rate / 25`` rows.

    Returns:
        ``(n_frames × feature_rate / 25, hidden_size)`` float32 on the encoder's device.
    """
    import torch

    param = next(audio_encoder.parameters())
    if feature_extractor is not None:
        inputs = feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
    else:  # what Wav2Vec2FeatureExtractor(do_normalize=True) does
        w = torch.as_tensor(wave, dtype=torch.float32)
        inputs = ((w - w.mean()) / torch.sqrt(w.var() + 1e-7))[None]
    with torch.inference_mode():
        hidden = audio_encoder(inputs.to(param.device, param.dtype)).last_hidden_state[0]
    length = n_frames * feature_rate // FPS
    hidden = hidden.float().T[None]  # (1, H, T')
    hidden = torch.nn.functional.interpolate(hidden, size=length, mode="linear", align_corners=False)
    return hidden[0].T.contiguous()


def _mel_features(wave, n_frames, get, audio_encoder, feature_extractor) -> torch.Tensor:
    names = {"n_mels": "n_mels", "n_fft": "n_fft", "hop_length": "hop_length", "mel_floor": "floor"}
    return log_mel(wave, n_frames, **{arg: get(key) for key, arg in names.items() if get(key) is not None})


def _wav2vec2_features(wave, n_frames, get, audio_encoder, feature_extractor) -> torch.Tensor:
    return wav2vec2_features(wave, n_frames, audio_encoder, feature_extractor,
                             feature_rate=get("feature_rate") or FRONTENDS["wav2vec2"].feature_rate)


FRONTENDS: dict[str, FrontEnd] = {
    "mel": FrontEnd("mel", 100, False, _mel_features),
    "wav2vec2": FrontEnd("wav2vec2", 50, True, _wav2vec2_features),
}


def load_audio_encoder(name: str):
    """(Wav2Vec2Model, Wav2Vec2FeatureExtractor) from a folder or Hub id, frozen, float32."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    try:
        model = Wav2Vec2Model.from_pretrained(name, dtype=torch.float32).eval()
    except OSError as e:
        raise CheckpointError(f"cannot load the wav2vec2 model {name!r}: {e}") from None
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(name)
    except OSError:
        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, do_normalize=True)
    model.requires_grad_(False)
    return model, fe
