"""How faithfully a speaker's encoder and decoder render frames they were trained on, and new ones.

    python bench/decoder_fit.py --model checkpoints/astronaut-64 \
        --data runs/bundled/voices runs/bundled/refine-heldout --out bench/results/decoder_fit.json

Each dataset's clips (the first ``--clips``; every ``--every``-th frame, at most ``--frames`` of
each): the frames encoded by the semantic encoder and decoded by the speaker's default decoder and
steps from one fixed noise image, against the same frames, at the decoder's size: PSNR per clip and
its mean. A refiner sees only such renderings, so what they lose against their truth (a few pixels
of head, hair and suit outline, the expression's details) bounds what it can restore; the gap
between the training clips and held-out ones is how much of that is the encoder and decoder not
generalising.
``psnr_cut`` / ``psnr_best_shift``: the same without the frames' edges, as they are and with each
rendering moved (within ±1 pixel) to where it fits best; ``best_shift_px``: how far.

``--fit-latent-steps N``: which of the two loses a frame, the encoder or the decoder: each frame's
z_sem is also fitted to the frame itself (N Adam steps on the rendering's squared error through the
same decoder, steps and noise image, from the encoder's z_sem): ``psnr_fitted_latent`` is what the
decoder draws from the best z_sem it finds, and ``latent_shift`` how far that z_sem lies from the
encoder's (the norm of the difference over the encoder's z_sem's norm), to set against
``latent_spread``, how far the encoder's z_sem of the clip's other frames lie from it (the same
measure, averaged over every pair of the clip's frames).
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
from talker.pipelines.ddim import ddim_decode
from talker.training.data import load_dataset
from talker.training.distill import frames_to_x0
from talker.training.refiner import psnr


@torch.no_grad()
def decoder_fit(pipe, clips, every: int, frames: int, seed: int, fit_latent_steps: int = 0) -> dict:
    ae = pipe.autoencoder_for(None)
    steps = pipe.default_steps(None)
    x_T = pipe.prepare_fixed_noise(torch.Generator().manual_seed(seed))
    rows = []
    for clip in clips:
        idx = list(range(0, clip.n_frames, every))[:frames]
        truth = clip.frames[idx]
        z = ae.encode(truth)
        rendered = ae.decode(z, x_T, num_inference_steps=steps)
        a, b = frames_to_x0(rendered), frames_to_x0(truth)
        rows.append({"clip": clip.id, "frames": len(idx), "psnr": round(psnr(a, b), 3)} | shift_fit(a, b))
        if fit_latent_steps:
            fitted = fit_latent(ae, z, b, x_T, steps, fit_latent_steps)
            rendered = ae.decode(fitted, x_T, num_inference_steps=steps)
            rows[-1] |= {"psnr_fitted_latent": round(psnr(frames_to_x0(rendered), b), 3),
                         "latent_shift": round(float(((fitted - z).norm(dim=1) / z.norm(dim=1)).mean()), 3),
                         "latent_spread": latent_spread(z)}
    values = [r["psnr"] for r in rows]
    means = ("psnr_cut", "psnr_best_shift", "best_shift_px")
    if fit_latent_steps:
        means += ("psnr_fitted_latent", "latent_shift", "latent_spread")
    return {"psnr_mean": round(float(np.mean(values)), 3), "psnr_min": min(values), "psnr_max": max(values),
            **{f"{k}_mean": round(float(np.mean([r[k] for r in rows])), 3) for k in means},
            "clips": len(rows), "per_clip": rows}


def latent_spread(z: torch.Tensor) -> float:
    """The mean over every pair (i, j ≠ i) of latents ``z`` (B, D) of |z_i − z_j| / |z_i|; NaN for one."""
    z = z.float()
    if len(z) < 2:
        return float("nan")
    d = torch.cdist(z, z) / z.norm(dim=1, keepdim=True)
    return round(float(d.sum() / (len(z) * (len(z) - 1))), 3)


def fit_latent(ae, z: torch.Tensor, truth: torch.Tensor, x_T: torch.Tensor, steps: int, iterations: int,
               lr: float = 0.02) -> torch.Tensor:
    """z_sem fitted to ``truth`` ((B, 3, H, W) in [-1, 1]) from the encoder's ``z``: ``iterations``
    Adam steps on the squared error of ``ae``'s rendering (``steps`` denoising steps from ``x_T``,
    the decoder's weights untouched)."""
    z = z.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(iterations):
            out = ddim_decode(ae.unet, ae.scheduler, z, x_T.to(z.dtype), steps, batch_size=len(z),
                              precision=ae.precision)
            # the gradient of z alone: the decoder's weights get none and are not stepped
            (z.grad,) = torch.autograd.grad(F.mse_loss(out.float(), truth), [z])
            opt.step()
    return z.detach()


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
    ap.add_argument("--fit-latent-steps", type=int, default=0,
                    help="also fit each frame's z_sem to it in this many steps (see the module's docstring)")
    args = ap.parse_args(argv)

    pipe = DAETalkerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if pipe.encoder is None:
        raise SystemExit(f"{args.model} has no semantic encoder (encoder/)")
    tic = time.perf_counter()
    results = {"command": "python bench/decoder_fit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": args.model, "decoder": pipe.default_decoder, "steps": pipe.default_steps(None),
               "resolution": pipe.resolution, "fit_latent_steps": args.fit_latent_steps, "datasets": {}}
    for data in args.data:
        _, clips = load_dataset(data)
        fit = decoder_fit(pipe, clips[: args.clips], args.every, args.frames, args.seed, args.fit_latent_steps)
        results["datasets"][data] = fit
        print(data, {k: v for k, v in fit.items() if k != "per_clip"})
    results["seconds"] = round(time.perf_counter() - tic, 1)
    print(f"wrote {write_results(args.out, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
