"""Resolving and checking speaker checkpoints: local folders and Hugging Face Hub repo ids.

diffusers cannot resolve this package's component classes from a repo id (it looks for remote
code), so repo ids are turned into a local snapshot with ``huggingface_hub.snapshot_download``
first, and the folder is loaded from there.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import CheckpointError

SPEAKER_FILE = "speaker.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder, or a Hub repo id (``owner/name``) → the folder holding the checkpoint.

    Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) a repo id is found in the Hub
    cache. Raises :class:`CheckpointError` when neither works.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{name} is a file; a speaker checkpoint is a folder (or a Hub repo id owner/name)")
    if not REPO_ID.match(name):
        raise CheckpointError(f"speaker checkpoint not found: {name} is neither a folder nor a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        return Path(snapshot_download(name, **kwargs))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"speaker checkpoint {name!r} is not a local folder and is not in the Hub cache "
            "(offline, or the Hub cannot be reached); download it first or pass a folder"
        ) from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"could not download {name!r} from the Hub: {e}") from None
    except Exception as e:  # network errors of httpx, bad revisions, ...
        raise CheckpointError(f"could not resolve {name!r} on the Hub: {type(e).__name__}: {e}") from None


def check_checkpoint(folder: Path, required: tuple[str, ...]) -> dict:
    """Check a checkpoint folder before diffusers loads it; returns model_index.json.

    Every registered component must have its folder with a config, and every model its
    ``*.safetensors`` weights (nothing pickled is ever loaded). Raises :class:`CheckpointError`
    naming the missing part.
    """
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise CheckpointError(f"{folder} is not a speaker checkpoint: model_index.json is missing")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{index_file} is not valid JSON: {e}") from None
    for name in required:
        entry = index.get(name)
        if not entry or entry[0] is None:
            raise CheckpointError(f"{folder}: model_index.json has no '{name}' component (required: {', '.join(required)})")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            raise CheckpointError(f"{folder}: component folder '{name}/' is missing")
        configs = [p for p in sub.iterdir() if p.suffix == ".json"]
        if not configs:
            raise CheckpointError(f"{folder}: '{name}/' has no config file")
        is_model = entry[1] not in ("DDIMScheduler", "Wav2Vec2FeatureExtractor") and "Scheduler" not in entry[1]
        if is_model and not any(p.suffix == ".safetensors" for p in sub.iterdir()):
            pickled = [p.name for p in sub.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            extra = f" (found {', '.join(pickled)}; pickled weights are never loaded)" if pickled else ""
            raise CheckpointError(f"{folder}: '{name}/' has no .safetensors weights{extra}")
    return index


def read_speaker(folder: Path) -> dict:
    """``speaker.json`` of a checkpoint (name, consent, reference pose, ...), or {} if absent."""
    path = folder / SPEAKER_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def write_speaker(folder: Path, speaker: dict) -> None:
    (Path(folder) / SPEAKER_FILE).write_text(json.dumps(speaker, indent=2) + "\n")


def stored_dtype(component: Path):
    """The torch dtype a component's safetensors weights are stored in (a speaker may be saved in
    float16 to be small): what a component added to it later is stored in too."""
    import torch
    from safetensors import safe_open

    weights = next(Path(component).glob("*.safetensors"))
    with safe_open(str(weights), framework="pt") as f:
        stored = f.get_slice(next(iter(f.keys()))).get_dtype()
    return torch.float16 if stored == "F16" else torch.float32
