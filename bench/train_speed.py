"""DAE training throughput (steps/s, images/s) at 64² and 128² on this machine.

    python bench/train_speed.py --out bench/results/train_speed.json [--steps 8] [--batch-size 16]

Times the real training step of `talker train dae` (encoder + UNet forward, noise-prediction
loss, backward, Adam, EMA) on random frames, with the default model sizes, after two warm-up
steps. Writes JSON with the device named.
"""

import argparse
import json
import time

import torch
from diffusers.training_utils import EMAModel

from talker.training.dae import DAEConfig, DiffusionAutoencoder, build_models
from talker.evaluation.results import describe_device, write_results


def measure(resolution: int, batch: int, steps: int, device: str) -> dict:
    cfg = DAEConfig(resolution=resolution)
    encoder, unet, scheduler = build_models(cfg)
    model = DiffusionAutoencoder(encoder, unet, scheduler).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ema = EMAModel(model.parameters(), decay=0.999)
    x0 = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    times = []
    for i in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        t = torch.randint(0, 1000, (batch,), device=device)
        with autocast:
            loss = model(x0, t, torch.randn_like(x0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - tic)
    per_step = sum(times) / len(times)
    params = sum(p.numel() for p in model.parameters())
    return {"resolution": resolution, "batch_size": batch, "steps_timed": steps, "s_per_step": per_step,
            "steps_per_s": 1 / per_step, "images_per_s": batch / per_step, "parameters": params}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/train_speed.json")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--resolutions", default="64,128")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = describe_device(device)
    results = {"device": name, "torch": torch.__version__,
               "runs": [measure(int(r), args.batch_size, args.steps, device) for r in args.resolutions.split(",")]}
    write_results(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
