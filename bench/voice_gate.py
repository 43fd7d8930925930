"""The voice gate alone, per voice: does it pass speech and shut pauses and babble?

    python bench/voice_gate.py --gate checkpoints/astronaut-64 \
        --set allison=runs/bundled/heldout-allison --set fr=runs/bundled/heldout-fr \
        --speech armelle=runs/prompts/asterisk-prompt-fr-armelle --out bench/results/voice_gate.json

No rendering: the gate's per-frame probability (P ≥ 0.5: a foreground voice) against each clip's
truth. A ``--set`` is a prepared held-out dataset (truth from the forced alignment or espeak-ng's
events); a ``--speech`` folder holds recordings of a voice the gate never heard, every one of
them used, joined into clips as ``talker train gate --speech`` joins them (truth from Silero VAD).
Per set, the held-out figures of ``talker train gate``: speech frames passed (as they are and
with babble of the set's other clips at 10 dB SNR), pause frames shut, frames of 10 s of babble
alone made of the set's other clips shut, and of babble of the clip's own voice (its clips in the
set, itself among them); and ``crowd``: babble made of every
set's clips at once (different people), ``--draws`` draws of 10 s. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from talker.evaluation.results import describe_device, write_results
from talker.models import VoiceGate
from talker.training.gate import babble_shut, evaluate_gate, load_recorded_voices, load_voices


def gate_folder(path: str) -> Path:
    """A voice_gate folder, or the speaker checkpoint or `train gate` run holding one."""
    p = Path(path)
    return p / "voice_gate" if (p / "voice_gate").is_dir() else p


def named(values: list[str], flag: str, ap: argparse.ArgumentParser) -> list[tuple[str, str]]:
    pairs = [v.partition("=")[::2] for v in values]
    bad = [v for v, (name, path) in zip(values, pairs, strict=True) if not name or not path]
    if bad:
        ap.error(f"{flag} takes NAME=DIR; got {', '.join(bad)}")
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gate", default="checkpoints/astronaut-64", help="speaker, `train gate` run or voice_gate folder")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=DIR", help="prepared held-out clips")
    ap.add_argument("--speech", action="append", default=[], metavar="NAME=DIR",
                    help="recordings of a voice never trained on (no transcript needed)")
    ap.add_argument("--clips", type=int, default=8, help="at most this many clips per set")
    ap.add_argument("--draws", type=int, default=6, help="draws of 10 s of crowd babble")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/voice_gate.json")
    args = ap.parse_args(argv)
    prepared, recorded = named(args.set, "--set", ap), named(args.speech, "--speech", ap)
    sets = prepared + recorded
    if not sets:
        ap.error("give at least one --set or --speech")

    torch.manual_seed(args.seed)
    gate = VoiceGate.from_pretrained(gate_folder(args.gate)).eval()
    tic = time.perf_counter()
    voices = {name: load_voices([path])[: args.clips] for name, path in prepared}
    voices |= {name: load_recorded_voices(path, held_out=0.0, seed=args.seed)[: args.clips] for name, path in recorded}
    results = {"gate": args.gate, "data": dict(sets), "device": describe_device("cpu"), "sets": {}}
    for name, vs in voices.items():
        scores = evaluate_gate(gate, vs, args.seed)
        results["sets"][name] = {**scores, "clips": len(vs),
                                 "seconds": round(sum(len(v.audio) for v in vs) / 16000, 1)}
    crowd = [v.audio for vs in voices.values() for v in vs]
    gate.eval()
    results["crowd"] = {"babble_alone_shut": float(np.mean(np.concatenate(
        [babble_shut(gate, crowd, np.random.default_rng([args.seed, 2, k])) for k in range(args.draws)]))),
        "voices": len(voices), "draws": args.draws}
    results["seconds"] = round(time.perf_counter() - tic, 1)
    write_results(args.out, results)
    for name, res in results["sets"].items():
        print(f"{name:>12}", json.dumps({k: round(v, 3) for k, v in res.items() if isinstance(v, float)}))
    print(f"{'crowd':>12}", results["crowd"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
