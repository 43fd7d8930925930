from .pipeline_dae_talker import POSE_MODES, DAETalkerOutput, DAETalkerPipeline

__all__ = ["DAETalkerPipeline", "DAETalkerOutput", "POSE_MODES"]
