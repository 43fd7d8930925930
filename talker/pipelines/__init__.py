from .dae_talker import POSE_MODES, DAETalkerOutput, DAETalkerPipeline
from .diffusion_autoencoder import DiffusionAutoencoderOutput, DiffusionAutoencoderPipeline

__all__ = [
    "DAETalkerPipeline",
    "DAETalkerOutput",
    "DiffusionAutoencoderPipeline",
    "DiffusionAutoencoderOutput",
    "POSE_MODES",
]
