"""talker: speech-driven talking faces after DAE-Talker (a diffusion autoencoder driven by speech).

    from talker import DAETalkerPipeline
    pipe = DAETalkerPipeline.from_pretrained("checkpoints/<speaker>")
    out = pipe("speech.wav", num_inference_steps=20)

The heavy parts (torch, diffusers) are imported on first use, so the CLI starts quickly.
"""

import importlib

from .errors import AudioError, CheckpointError, InputError, TalkerError, VideoError

__version__ = "0.1.0"

_LAZY = {
    "DAETalkerPipeline": "pipelines",
    "DAETalkerOutput": "pipelines",
    "DiffusionAutoencoderPipeline": "pipelines",
    "SemanticEncoder": "models",
    "DAEDecoderUNet": "models",
    "Speech2Latent": "models",
    "EMOTIONS": "models",
}

__all__ = [*_LAZY, "TalkerError", "AudioError", "InputError", "CheckpointError", "VideoError"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'talker' has no attribute {name!r}")
