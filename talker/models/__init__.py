"""Models of DAE-Talker: the diffusion autoencoder (encoder + decoder UNet) and speech2latent."""

from .encoder import SemanticEncoder
from .speech2latent import EMOTIONS, PoseAdaptor, Speech2Latent, Speech2LatentOutput
from .unet import DAEDecoderOutput, DAEDecoderUNet

__all__ = [
    "SemanticEncoder",
    "DAEDecoderUNet",
    "DAEDecoderOutput",
    "Speech2Latent",
    "Speech2LatentOutput",
    "PoseAdaptor",
    "EMOTIONS",
]
