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
