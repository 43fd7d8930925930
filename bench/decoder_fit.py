"""How faithfully a speaker's encoder and decoder render frames they were trained on, and new ones.

    python bench/decoder_fit.py --model checkpoints/astronaut-64 \
        --data runs/bundled/voices runs/bundled/refine-heldout --out bench/results/decoder_fit.json

Each dataset's clips (the first ``--clips``; every ``--every``-th frame, at most ``--frames`` of
each): the frames encoded by the semantic encoder and decoded by the speaker's default decoder and
steps from one fixed noise image, against the same frames, at the decoder's size: PSNR per clip and
its mean. A refiner sees only such renderings, so what they lose against their truth (a few pixels
of head, hair and suit outline, the expression's details) bounds what it can restore; the gap
between the training clips and held-out ones is how much of that is the decoder not generalising.
``psnr_cut`` / ``psnr_best_shift``: the same without the frames' edges, as they are and with each
rendering moved (within ±1 pixel) to where it fits best; ``best_shift_px``: how far.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from talker.evaluation.results import write_results
from talker.pipelines import DAETalkerPipeline
from talker.training.data import load_dataset
from talker.training.distill import frames_to_x0
from talker.training.refiner import psnr


@torch.no_grad()
def decoder_fit(pipe, clips, every: int, frames: int, seed: int) -> dict:
    ae = pipe.autoencoder_for(None)
    steps = pipe.default_steps(None)
    x_T = pipe.prepare_fixed_noise(torch.Generator().manual_seed(seed))
    rows = []
    for clip in clips:
        idx = list(range(0, clip.n_frames, every))[:frames]
        truth = clip.frames[idx]
        rendered = ae.decode(ae.encode(truth), x_T, num_inference_steps=steps)
        a, b = frames_to_x0(rendered), frames_to_x0(truth)
        rows.append({"clip": clip.id, "frames": len(idx), "psnr": round(psnr(a, b), 3)} | shift_fit(a, b))
    values = [r["psnr"] for r in rows]
    return {"psnr_mean": round(float(np.mean(values)), 3), "psnr_min": min(values), "psnr_max": max(values),
            **{f"{k}_mean": round(float(np.mean([r[k] for r in rows])), 3)
               for k in ("psnr_cut", "psnr_best_shift", "best_shift_px")},
            "clips": len(rows), "per_clip": rows}


def shift_fit(rendered: torch.Tensor, truth: torch.Tensor, up: int = 4) -> dict:
    """How much of the renderings' error is the whole head in the wrong place: both upscaled
    ``up``× (bicubic) and cut by 2 pixels at every edge, each rendering's PSNR against its truth
    as it is and at the whole-frame shift (in steps of 1/``up`` pixel, within ±1 pixel) that suits
    it best (means over the frames), and the mean length of that shift in pixels."""
    a, b = (F.interpolate(x, scale_factor=up, mode="bicubic", align_corners=False) for x in (rendered, truth))
    m, side = 2 * up, a.shape[-1]
    target = b[..., m : side - m, m : side - m]
    zero, best, length = [], [], []
    for k in range(len(a)):
        tries = {(dy, dx): psnr(a[k : k + 1, :, m + dy : side - m + dy, m + dx : side - m + dx], target[k : k + 1])
                 for dy in range(-up, up + 1) for dx in range(-up, up + 1)}
        (dy, dx), p = max(tries.items(), key=lambda t: t[1])
        zero.append(tries[0, 0])
        best.append(p)
        length.append(np.hypot(dy, dx) / up)
    return {"psnr_cut": round(float(np.mean(zero)), 3), "psnr_best_shift": round(float(np.mean(best)), 3),
            "best_shift_px": round(float(np.mean(length)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/astronaut-64")
    ap.add_argument("--data", nargs="+", required=True, help="prepared datasets (training and held-out)")
    ap.add_argument("--out", default="bench/results/decoder_fit.json")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--every", type=int, default=10, help="every this many frames of a clip")
    ap.add_argument("--frames", type=int, default=24, help="at most this many frames of a clip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    pipe = DAETalkerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if pipe.encoder is None:
        raise SystemExit(f"{args.model} has no semantic encoder (encoder/)")
    tic = time.perf_counter()
    results = {"command": "python bench/decoder_fit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": args.model, "decoder": pipe.default_decoder, "steps": pipe.default_steps(None),
               "resolution": pipe.resolution, "datasets": {}}
    for data in args.data:
        _, clips = load_dataset(data)
        results["datasets"][data] = fit = decoder_fit(pipe, clips[: args.clips], args.every, args.frames, args.seed)
        print(data, {k: v for k, v in fit.items() if k != "per_clip"})
    results["seconds"] = round(time.perf_counter() - tic, 1)
    print(f"wrote {write_results(args.out, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
