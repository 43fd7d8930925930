"""``from_pretrained`` / ``save_pretrained`` that accept Hub repo ids and carry ``speaker.json``."""

from __future__ import annotations

import os

from ..hub import check_checkpoint, read_speaker, resolve_checkpoint, write_speaker


class SpeakerCheckpointMixin:
    """Loads a folder or a Hub repo id (resolved with ``snapshot_download``), checks that every
    part is present and in safetensors, and keeps the checkpoint's ``speaker.json`` as
    ``pipe.speaker``. Mixed into pipelines before ``DiffusionPipeline``.

    Weights load as float32 unless ``dtype`` is given: checkpoints may be stored in float16 to
    be small, but float16 arithmetic on a CPU is many times slower than float32 (pass
    ``dtype=torch.float16`` or ``torch.bfloat16`` on a GPU)."""

    _required_components: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        folder = resolve_checkpoint(
            pretrained_model_name_or_path,
            revision=kwargs.pop("revision", None),
            cache_dir=kwargs.pop("cache_dir", None),
            token=kwargs.pop("token", None),
            local_files_only=kwargs.pop("local_files_only", None),
        )
        check_checkpoint(folder, cls._required_components)
        kwargs.setdefault("use_safetensors", True)
        if "dtype" not in kwargs and "torch_dtype" not in kwargs:
            import torch

            kwargs["dtype"] = torch.float32
        pipe = super().from_pretrained(str(folder), **kwargs)
        pipe.speaker = read_speaker(folder)
        return pipe

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        if getattr(self, "speaker", None):
            write_speaker(save_directory, self.speaker)
