"""talker: speech-driven talking faces after DAE-Talker (a diffusion autoencoder driven by speech).

    from talker import DAETalkerPipeline
    pipe = DAETalkerPipeline.from_pretrained("checkpoints/<speaker>")
    out = pipe("speech.wav", num_inference_steps=20)
"""

__version__ = "0.1.0"

from .errors import AudioError, CheckpointError, InputError, TalkerError, VideoError
from .models import EMOTIONS, DAEDecoderUNet, SemanticEncoder, Speech2Latent
from .pipelines import DAETalkerOutput, DAETalkerPipeline, DiffusionAutoencoderPipeline

__all__ = [
    "DAETalkerPipeline",
    "DAETalkerOutput",
    "DiffusionAutoencoderPipeline",
    "SemanticEncoder",
    "DAEDecoderUNet",
    "Speech2Latent",
    "EMOTIONS",
    "TalkerError",
    "AudioError",
    "InputError",
    "CheckpointError",
    "VideoError",
]
