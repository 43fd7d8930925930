"""The refiner of a speaker: sharpness, fidelity, lips and flicker at its resolution, and speed.

    python bench/refiner.py --model checkpoints/astronaut-64 --data runs/refine/heldout \
        --out bench/results/refiner.json

``--data``: held-out clips prepared with ``--refiner-resolution`` (never trained on), with
``talker synth`` truth. Measured in one run, on this machine:

- ``frames``: each clip's truth frames encoded and decoded by the speaker's default decoder and
  steps (one fixed noise image), then refined, or bicubic-upscaled, to the refiner's size, against
  the truth crops at that size: PSNR, and sharpness (mean gradient magnitude) ÷ the truth's; and
  what the decoder's own error leaves to any refiner: its frames' PSNR against the truth at the
  decoder's size, and the PSNR of a perfect detail-adder (bicubic plus exactly the detail that the
  truth loses in its own downscale);
- ``speech``: the speaker driven by each clip's audio, refined and not (the same latents): the
  lip figures of ``bench/real_speech.py`` (MediaPipe's face mesh on the pixels, against the
  clip's truth) at both sizes, and the jitter (mean |Δframe| of consecutive frames) ÷ the truth's
  at both sizes;
- ``speed``: ``generate_video`` end to end on ``--seconds-speed`` of speech at the refiner's size
  and without it (frames/s), the paper's recipe (DDIM, 100 steps, one frame at a time, float32)
  in the same run, and peak memory for 10 s and 60 s of speech (``bench/speed.py``'s measure).

``--noise inverted-reference``: every frame decoded from the DDIM-inverted noise image of the
speaker's reference frame (the refiner's, area-downscaled to the decoder's size; 50 steps of its
DDIM decoder) in place of one random noise image: DiffAE's stochastic code of the speaker's own
photo, the ablation the DAE-Talker notes leave open (inverted x_T against a random fixed one).

``--live``: the speaker's live refiner, as live input uses it: ``frames`` on its live decoder's
renderings (the light decoder where it has one), refined by the live refiner and, for comparison,
by the speaker's refiner (``*_full_refiner``); live lip-sync is ``bench/real_speech.py --live``'s.

Writes JSON and a contact sheet PNG (truth, bicubic, refined [, by the refiner]; one column per
clip) next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from talker.evaluation.metrics import FaceProbe, jitter, lipsync_scores  # noqa: E402
from talker.pipelines import DAETalkerPipeline  # noqa: E402
from talker.training.data import load_dataset  # noqa: E402
from talker.training.refiner import psnr, sharpness  # noqa: E402
from talker.evaluation.results import write_results

NOISE = ("random", "inverted-reference")
INVERSION_STEPS = 50


def to_model(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def frame_quality(pipe, clips, seconds: float, x_T: torch.Tensor, decoder: str | None = None,
                  refiners: dict | None = None) -> tuple[dict, list]:
    """``decoder``'s renderings of the clips' encoded frames from noise image ``x_T``, refined by
    each of ``refiners`` (name → module; None: the speaker's refiner; default {"refined": None})
    and bicubic-upscaled."""
    refiners = refiners or {"refined": None}
    ae = pipe.autoencoder_for(decoder)
    steps = pipe.default_steps(decoder)
    size = pipe.output_resolution()
    rows, sheet = [], []
    for clip in clips:
        n = min(clip.n_frames, int(seconds * 25))
        z = torch.cat([ae.encode(clip.frames[i : min(i + 32, n)]) for i in range(0, n, 32)])
        raw = to_model(ae.decode(z, x_T, num_inference_steps=steps))
        bicubic = F.interpolate(raw, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        truth = to_model(clip.frames_at(size)[:n])
        s = sharpness(truth)
        # the decoder's own error bounds what any refiner reaches: its frames against the truth at
        # its size, and a perfect detail-adder (bicubic plus exactly the detail the truth's own
        # downscale loses) against the truth
        truth_small = F.avg_pool2d(truth, size // raw.shape[-1])
        lost = truth - F.interpolate(truth_small, size=size, mode="bicubic", align_corners=False)
        row = {"clip": clip.id, "frames": n, "psnr_bicubic": psnr(bicubic, truth), "sharpness_bicubic": sharpness(bicubic) / s,
               "psnr_decoder_at_its_size": psnr(raw, truth_small),
               "psnr_perfect_detail": psnr((bicubic + lost).clamp(-1, 1), truth)}
        k = n // 2
        sheet.append([truth[k], bicubic[k]])
        for name, refiner in refiners.items():
            refined = torch.cat([pipe.refine_frames(raw[i : i + 16], refiner) for i in range(0, n, 16)])
            row |= {f"psnr_{name}": psnr(refined, truth), f"sharpness_{name}": sharpness(refined) / s}
            sheet[-1].append(refined[k])
        rows.append(row)
    return _mean(rows), sheet


@torch.no_grad()
def speech_figures(pipe, probe, clips, seconds: float, seed: int, x_T: torch.Tensor) -> dict:
    """The speaker driven by each clip's audio from noise image ``x_T``, refined and not: lip figures and jitter."""
    rows = []
    for clip in clips:
        n = min(clip.n_frames, int(seconds * 25))
        truth = dict(np.load(clip.path / "truth.npz"))
        audio = clip.audio[: n * 640]
        kw = dict(sampling_rate=16000, emotion=[0, 0, 0, 0], fixed_noise=x_T)
        big = pipe(audio, generator=torch.Generator().manual_seed(seed), **kw).frames
        small = pipe(audio, generator=torch.Generator().manual_seed(seed), refine=False, **kw).frames
        size = big.shape[1]
        truth_big, truth_small = clip.frames_at(size)[:n], clip.frames[:n]
        row = {"clip": clip.id, "frames": n}
        for name, frames, truth_frames in (("refined", big, truth_big), ("decoder", small, truth_small)):
            scores = lipsync_scores(probe.features(frames)[:, 0], probe.features(truth_frames)[:, 0], truth, n)
            row.update({f"{k}_{name}": v for k, v in scores.items() if k in ("mouth_corr", "silent_closed", "open_ratio")})
            row[f"jitter_ratio_{name}"] = jitter(frames) / jitter(truth_frames)
        rows.append(row)
    return _mean(rows)


@torch.no_grad()
def noise_image(pipe, kind: str, seed: int) -> torch.Tensor:
    """The noise image every frame is decoded from: "random" (the pipeline's, from ``seed``) or
    "inverted-reference" (see the module's docstring)."""
    if kind == "random":
        return pipe.prepare_fixed_noise(torch.Generator().manual_seed(seed))
    if not pipe.refiner.config.use_reference:
        raise SystemExit("--noise inverted-reference: this speaker's refiner keeps no reference frame to invert")
    teacher = pipe.autoencoder_for("ddim")
    reference = ((F.avg_pool2d(pipe.refiner.reference.float()[None], pipe.refiner.config.scale) + 1) / 2).clamp(0, 1)
    return teacher.invert(reference, num_inference_steps=INVERSION_STEPS)


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    return {"mean": {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in keys} | {"clips": len(rows)},
            "per_clip": rows}


@torch.no_grad()
def speed(pipe, model: str, seconds: float, seed: int) -> dict:
    from speed import memory, speech

    wave = speech(seconds)
    n = int(seconds * 25)
    out = {"audio_seconds": seconds, "decoder": pipe.default_decoder, "steps": pipe.default_steps(None)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, refine in (("refined", True), ("decoder", False)):
            tic = time.perf_counter()
            pipe.generate_video(wave, Path(tmp) / f"{name}.mp4", sampling_rate=16000, refine=refine,
                                generator=torch.Generator().manual_seed(seed))
            t = time.perf_counter() - tic
            out[f"generate_video_{name}"] = {"size": pipe.output_resolution(refine), "seconds": round(t, 3),
                                             "fps": round(n / t, 3)}
    # the paper's recipe: DDIM at 100 steps, one frame at a time, float32, at the decoder's size
    precision, pipe.precision = pipe.precision, "float32"
    ae = pipe.autoencoder_for("ddim")
    z = torch.randn(4, pipe.unet.config.z_dim)
    x_T = pipe.prepare_fixed_noise(torch.Generator().manual_seed(seed))
    tic = time.perf_counter()
    for i in range(len(z)):
        ae.decode(z[i : i + 1], x_T, num_inference_steps=100)
    paper_fps = len(z) / (time.perf_counter() - tic)
    pipe.precision = precision
    out["paper_recipe_fps"] = round(paper_fps, 4)
    out["speedup_over_paper_recipe"] = round(out["generate_video_refined"]["fps"] / paper_fps, 1)
    out["memory"] = memory(model, [10, 60], pipe.default_steps(None), "cpu")
    return out


def save_sheet(path: Path, sheet: list) -> None:
    from PIL import Image

    cols = [torch.cat(col, dim=1) for col in sheet]  # truth, bicubic, refined (by each refiner) top to bottom
    grid = torch.cat(cols, dim=2)
    Image.fromarray(to_uint8(grid[None])[0]).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/astronaut-64")
    ap.add_argument("--data", required=True, help="held-out clips prepared with --refiner-resolution")
    ap.add_argument("--out", default="bench/results/refiner.json")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0, help="at most this many seconds of each clip")
    ap.add_argument("--seconds-speed", type=float, default=10.0)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", choices=NOISE, default="random", help="the noise image the frames are decoded from")
    ap.add_argument("--live", action="store_true", help="the live refiner on the live decoder's frames (frames only)")
    args = ap.parse_args(argv)

    pipe = DAETalkerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if pipe.refiner is None:
        raise SystemExit(f"{args.model} has no refiner")
    _, clips = load_dataset(args.data)
    clips = [c for c in clips if (c.path / "truth.npz").is_file()][: args.clips]
    tic = time.perf_counter()
    results = {"command": "python bench/refiner.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": args.model, "data": args.data, "size": [pipe.resolution, pipe.output_resolution()], "noise": args.noise}
    x_T = noise_image(pipe, args.noise, args.seed)
    if args.live:
        if pipe.live_refiner is None:
            raise SystemExit(f"{args.model} has no live refiner")
        results["decoder"] = pipe.live_decoder
        results["frames"], sheet = frame_quality(pipe, clips, args.seconds, x_T, pipe.live_decoder,
                                                 {"refined": pipe.live_refiner, "full_refiner": None})
    else:
        results["frames"], sheet = frame_quality(pipe, clips, args.seconds, x_T)
    print("frames", json.dumps(results["frames"]["mean"]))
    if not args.live:
        results["speech"] = speech_figures(pipe, FaceProbe(), clips, args.seconds, args.seed, x_T)
        print("speech", json.dumps(results["speech"]["mean"]))
    if not args.no_speed and not args.live:
        results["speed"] = speed(pipe, args.model, args.seconds_speed, args.seed)
        print("speed", json.dumps({k: v for k, v in results["speed"].items() if k != "memory"}))
    results["seconds"] = round(time.perf_counter() - tic, 1)
    out = write_results(args.out, results)
    save_sheet(out.with_suffix(".png"), sheet)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
