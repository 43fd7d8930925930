"""Fit a trained speech2latent's mouth read-out, mouth axis and mouth gain again, as ``talker
train s2l`` does at its kept step: the read-out and axis on the training clips' latents and
synthetic truth, the gain on the held-out clips (the same split), clean audio, as the pipeline
shapes the openings. For a run trained before the gain existed, or after the data changed.

    python scripts/calibrate_mouth.py --s2l runs/real/s2l-mouth --data runs/real/voices
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from talker.models import Speech2Latent
from talker.training.data import load_dataset, split_clips
from talker.frontends import speech_features
from talker.training.s2l import MouthReadout, S2LConfig, clip_mouth_open, evaluate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s2l", required=True, help="a `talker train s2l` run (its speech_to_latent/ is rewritten)")
    ap.add_argument("--data", required=True, help="the encoded dataset the run trained on")
    args = ap.parse_args(argv)

    run = Path(args.s2l)
    saved = json.loads((run / "train_config.json").read_text())
    cfg = S2LConfig(**{k: v for k, v in saved.items() if k in S2LConfig.__dataclass_fields__})
    model = Speech2Latent.from_pretrained(run / "speech_to_latent", use_safetensors=True).eval()
    _, clips = load_dataset(args.data)
    train, held = split_clips(clips, cfg.held_out)
    mouths = [clip_mouth_open(c) for c in train]
    readout = MouthReadout(np.concatenate([c.latents() for c in train]), np.concatenate(mouths))
    model.set_mouth_readout(readout.mean, readout.weight, readout.bias, readout.direction)
    items = []
    for clip in held:
        lat = torch.from_numpy(clip.latents()).float()
        emo = None if clip.emotion is None else torch.from_numpy(clip.emotion).float()
        items.append((speech_features(clip.audio, len(lat), cfg), lat, torch.from_numpy(clip.pose).float(), emo,
                      clip_mouth_open(clip)))
    with torch.no_grad():
        scores = evaluate(model, items, "cpu", readout, window=int(round(cfg.window_seconds * 25)))
    model.eval()
    model.register_to_config(mouth_gain=round(scores["heldout_mouth_gain"], 4))
    model.save_pretrained(run / "speech_to_latent")
    print(json.dumps({"mouth_gain": model.config.mouth_gain, "heldout_mouth_mse": scores["heldout_mouth_mse"],
                      "train_clips": len(train), "heldout_clips": len(held)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
