"""Measured figures to a JSON file, the one way ``talker evaluate`` and every ``bench/`` script
write theirs: indented, written to a temporary file beside the target and renamed, so that a
killed run never leaves half a file where the last good figures were."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_results(path: str | os.PathLike, results: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def describe_device(device: str = "cpu") -> str:
    """The machine a figure was measured on, for the JSON: the GPU's name, or the CPU's model,
    whether it computes bfloat16 natively (the decoder's "auto" precision depends on it) and the
    threads torch uses; e.g. "Intel(R) Xeon(R) Processor (AMX), 2 threads"."""
    import platform

    import torch

    from ..pipelines.ddim import cpu_native_bf16

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:  # not Linux
        pass
    return f"{model} ({cpu_native_bf16() or 'no native bfloat16'}), {torch.get_num_threads()} threads"
