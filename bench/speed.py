"""Generation speed of a speaker: frames/s, real-time factor, streaming latency, peak memory.

    python bench/speed.py --model checkpoints/astronaut-64 --out bench/results/speed.json \
        [--data runs/bundled/heldout] [--device cpu|cuda]

Measured in one run, on this machine:
- the DDIM decoder at 5/10/20/50 steps, batched (``--batch`` frames together) at the pipeline's
  precision and in float32, and frame by frame, against the paper's recipe (100 DDIM steps, one
  frame at a time, float32);
- with ``--data`` (a `talker prepare` folder with synthetic truth): PSNR against the truth
  frames of frames decoded from their true latents with one fixed x_T, for DDIM at 100 steps
  (the paper, float32) and DDIM / DPM-Solver++ / UniPC at 5/10/20 steps at the pipeline's precision
  (and DDIM in float32): what fewer steps and bfloat16 cost in quality;
- ``generate_video`` end to end on 10 s of speech at ``--steps`` (frames/s, real-time factor);
- ``pipe.stream`` on the same 10 s fed in 100 ms chunks: first-frame latency and total time;
- peak memory (RSS on a CPU, allocated GPU memory on a GPU) of ``generate_video`` for 10 s and
  60 s of speech, each in a fresh process with the high-water mark reset after loading the model
  (``--memory-steps`` DDIM steps: memory does not depend on the step count).
``--untrained-resolution 128`` times the speaker's architecture at another resolution with random
decoder weights (speed does not depend on the weights; no quality section);
``--untrained-refiner-scale 8`` times a 512² refiner of the speaker's configuration the same way, and
``--random-weights unet,speech_to_latent`` components the checkpoint was copied without (each named
in the JSON; no quality or memory section). Where PyAV is not
installed, the end-to-end run times ``pipe(...)`` without writing the mp4 and says so.
``--only decoder,solvers,end_to_end,memory`` re-measures some sections and keeps the others of
an existing ``--out`` file.
Writes JSON and a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from talker.evaluation.results import describe_device, write_results
from talker.evaluation.timing import add_timing_arguments, reinitialise

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "hello.wav", ROOT / "examples" / "weather.wav"]


def speech(seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz speech: the example clips, repeated."""
    from talker.audio import load_audio

    clips = [load_audio(str(p), max_duration=None) for p in EXAMPLES]
    wave = np.concatenate(clips * int(np.ceil(seconds * 16000 / sum(map(len, clips)))))
    return wave[: int(seconds * 16000)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    tic = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - tic


@torch.inference_mode()
def decoder_speed(pipe, z: torch.Tensor, steps_list, batch: int, frames_batched: int, frames_single: int,
                  device: str) -> dict:
    """Decoder frames/s at the pipeline's precision ("auto") and in float32, batched and frame by
    frame; the paper's recipe (100 steps, one frame at a time, float32)."""
    from talker.pipelines.ddim import ddim_decode

    def decode(zz, x, steps, b, precision="auto"):
        return ddim_decode(pipe.unet, pipe.scheduler, zz, x, steps, b, precision=precision)

    x_T = torch.randn(1, 3, pipe.resolution, pipe.resolution, generator=torch.Generator().manual_seed(0)).to(device, pipe.unet.dtype)
    decode(z[:batch], x_T, 2, batch)  # warm-up
    decode(z[:batch], x_T, 2, batch, "float32")
    rows = {}
    for steps in steps_list:
        zb, zs = z[:frames_batched], z[:frames_single]
        t_b = timed(lambda: decode(zb, x_T, steps, batch), device)
        t_32 = timed(lambda: decode(zb, x_T, steps, batch, "float32"), device)
        t_s = timed(lambda: decode(zs, x_T, steps, 1), device)
        rows[str(steps)] = {"batched_fps": round(len(zb) / t_b, 3), "batched_fps_float32": round(len(zb) / t_32, 3),
                            "frame_by_frame_fps": round(len(zs) / t_s, 3)}
        print(f"decoder {steps:>3} steps: batched {len(zb) / t_b:7.2f} frames/s (float32 {len(zb) / t_32:7.2f}), "
              f"frame by frame {len(zs) / t_s:7.2f}")
    zs = z[: max(2, frames_single // 2)]
    t = timed(lambda: decode(zs, x_T, 100, 1, "float32"), device)
    baseline = {"steps": 100, "frame_batch_size": 1, "precision": "float32", "fps": round(len(zs) / t, 4),
                "frames_timed": len(zs)}
    print(f"paper recipe (100 steps, frame by frame, float32): {baseline['fps']:.3f} frames/s")
    return {"by_steps": rows, "paper_recipe": baseline, "frame_batch_size": batch}


@torch.inference_mode()
def solver_quality(pipe, data: str, n_frames: int, steps_list, device: str) -> dict:
    """PSNR against the truth frames of frames decoded from their true latents with one fixed
    x_T: DDIM 100 steps in float32 (the paper) against each solver at fewer steps at the
    pipeline's precision, and DDIM in float32."""
    from talker.pipelines.ddim import use_scheduler
    from talker.evaluation.metrics import psnr
    from talker.training.data import load_dataset

    _, clips = load_dataset(data)
    frames = np.concatenate([c.frames for c in clips])
    frames = frames[np.linspace(0, len(frames) - 1, n_frames).round().astype(int)]
    ae = pipe.autoencoder
    z = ae.encode(frames)
    x_T = torch.randn(1, 3, pipe.resolution, pipe.resolution, generator=torch.Generator().manual_seed(0))

    def decoded_psnr(steps, precision="auto"):
        ae = pipe.autoencoder
        ae.precision = precision
        return round(psnr(ae.decode(z, x_T, steps, batch_size=32), frames), 3)

    ddim = pipe.scheduler
    out = {"frames": n_frames, "ddim_100_paper": decoded_psnr(100, "float32")}
    if pipe.distilled_unet is not None:
        dae = pipe.autoencoder_for("distilled")
        out["distilled"] = {str(k): round(psnr(dae.decode(z, x_T, k, batch_size=32), frames), 3) for k in (1, 2, 4)}
        print(f"PSNR from true latents, distilled decoder: {out['distilled']}")
    print(f"PSNR from true latents, DDIM 100 steps, float32: {out['ddim_100_paper']:.2f} dB")
    out["ddim_float32"] = {str(steps): decoded_psnr(steps, "float32") for steps in steps_list}
    print(f"PSNR from true latents, DDIM float32: {out['ddim_float32']}")
    for name in ("ddim", "dpmsolver++", "unipc"):
        use_scheduler(pipe, name)
        out[name] = {str(steps): decoded_psnr(steps) for steps in steps_list}
        print(f"PSNR from true latents, {name}: {out[name]}")
        pipe.scheduler = ddim
    return out


def end_to_end(pipe, steps: int, seconds: float, scheduler: str, device: str, decoder: str = "ddim") -> dict:
    import importlib.util

    from talker.pipelines.ddim import use_scheduler

    wave = speech(seconds)
    ddim = pipe.scheduler
    use_scheduler(pipe, scheduler)
    writes_mp4 = importlib.util.find_spec("av") is not None
    with tempfile.TemporaryDirectory() as tmp:
        gen = torch.Generator().manual_seed(0)
        if writes_mp4:
            t = timed(lambda: pipe.generate_video(wave, Path(tmp) / "v.mp4", sampling_rate=16000,
                                                  num_inference_steps=steps, generator=gen, decoder=decoder), device)
        else:  # no PyAV here: frames in memory, no mp4
            t = timed(lambda: pipe(wave, sampling_rate=16000, num_inference_steps=steps, generator=gen,
                                   decoder=decoder), device)
    n = int(seconds * 25)
    chunk = 1600  # 100 ms
    first = None
    sync(device)
    tic = time.perf_counter()
    count = 0
    for _ in pipe.stream((wave[i : i + chunk] for i in range(0, len(wave), chunk)), 16000, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), decoder=decoder):
        if first is None:
            sync(device)
            first = time.perf_counter() - tic
        count += 1
    sync(device)
    total = time.perf_counter() - tic
    pipe.scheduler = ddim
    result = {
        "audio_seconds": seconds, "decoder": decoder, "steps": steps, "output_size": pipe.output_resolution(),
        "scheduler": scheduler if decoder == "ddim" else "ddim (trailing, x0)", "frames": n,
        "generate_video": {"seconds": round(t, 3), "fps": round(n / t, 3), "real_time_factor": round(t / seconds, 3),
                           "writes_mp4": writes_mp4},
        "stream": {"first_frame_s": round(first, 3), "total_s": round(total, 3), "fps": round(count / total, 3),
                   "first_frame_share_of_total": round(first / total, 4), "chunk_ms": 100},
    }
    print(json.dumps(result, indent=1))
    return result


MEMORY_CHILD = """
import json, re, resource, sys, tempfile, threading, time, torch
sys.path.insert(0, {bench!r})
from speed import speech
from talker import DAETalkerPipeline

def status(key):  # kB, from /proc/self/status
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

pipe = DAETalkerPipeline.from_pretrained({model!r}).to({device!r})
pipe.set_progress_bar_config(disable=True)
wave = speech({seconds})
cuda = {device!r}.startswith("cuda")
if cuda:
    torch.cuda.reset_peak_memory_stats()
# the high-water mark of this process so far is loading the model; reset it (Linux: clear_refs 5)
# so that it measures generation alone, or else sample the resident size every 5 ms
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    open("/proc/self/clear_refs", "w").write("5")
    method = "VmHWM after clear_refs"
except OSError:
    method = "VmRSS sampled every 5 ms"
before = status("VmRSS")
sampled, done = [before], threading.Event()
def sample():
    while not done.wait(0.005):
        sampled.append(status("VmRSS"))
thread = threading.Thread(target=sample, daemon=True)
thread.start()
with tempfile.TemporaryDirectory() as tmp:
    pipe.generate_video(wave, tmp + "/v.mp4", sampling_rate=16000, num_inference_steps={steps},
                        generator=torch.Generator().manual_seed(0), max_duration=None)
done.set()
thread.join()
peak = status("VmHWM") if method.startswith("VmHWM") else max(sampled)
print(json.dumps({{"peak_rss_mib": round(peak / 1024, 1), "rss_before_mib": round(before / 1024, 1),
                  "growth_mib": round((peak - before) / 1024, 1), "method": method,
                  "load_peak_rss_mib": round(load_peak / 1024, 1),
                  "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}}))
"""


def memory(model: str, seconds_list, steps: int, device: str) -> dict:
    out = {"steps": steps}
    for seconds in seconds_list:
        code = MEMORY_CHILD.format(bench=str(Path(__file__).parent), model=model, device=device, seconds=seconds, steps=steps)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        out[f"{seconds:g}s"] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"memory, {seconds:g} s of audio: {out[f'{seconds:g}s']}")
    a, b = out[f"{seconds_list[0]:g}s"], out[f"{seconds_list[-1]:g}s"]
    key = "peak_gpu_mib" if device.startswith("cuda") else "peak_rss_mib"  # peak while generating
    out["ratio_longest_to_shortest"] = round(b[key] / a[key], 3)
    return out


def _plot_decoder(ax, results: dict) -> None:
    rows = results["decoder"]["by_steps"]
    steps = [int(s) for s in rows]
    ax.plot(steps, [rows[str(s)]["batched_fps"] for s in steps], "o-",
            label=f"batched ({results['decoder']['frame_batch_size']} frames, {results['auto_precision']})")
    ax.plot(steps, [rows[str(s)]["batched_fps_float32"] for s in steps], "d-", label="batched, float32")
    ax.plot(steps, [rows[str(s)]["frame_by_frame_fps"] for s in steps], "s--", label="frame by frame")
    ax.axhline(results["decoder"]["paper_recipe"]["fps"], color="gray", ls=":", label="paper: 100 steps, frame by frame")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("DDIM steps")
    ax.set_ylabel("frames / s")
    ax.set_title(f"decoder speed ({results['device']})")
    ax.legend(fontsize=8)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    if "decoder" not in results:
        ax[0].axis("off")
    else:
        _plot_decoder(ax[0], results)
    q = results.get("solver_psnr")
    if q:
        for name, marker in (("ddim", "o-"), ("ddim_float32", "d--"), ("dpmsolver++", "s-"), ("unipc", "^-"),
                             ("distilled", "*-")):
            if name not in q:
                continue
            ax[1].plot([int(s) for s in q[name]], list(q[name].values()), marker, label=name)
        ax[1].axhline(q["ddim_100_paper"], color="gray", ls=":", label="DDIM 100 (paper)")
        ax[1].set_xlabel("steps")
        ax[1].set_ylabel("PSNR vs truth (dB), true latents")
        ax[1].set_title("quality of fewer steps")
        ax[1].legend(fontsize=8)
    else:
        ax[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SECTIONS = ("decoder", "solvers", "end_to_end", "memory")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "astronaut-64"))
    ap.add_argument("--data", help="prepared held-out clips with synthetic truth (solver quality)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="step count of the end-to-end runs (default: the CLI's)")
    ap.add_argument("--scheduler", default=None, help="solver of the end-to-end runs (default: the CLI's)")
    ap.add_argument("--decoder", choices=("distilled", "ddim"),
                    help="decoder of the end-to-end runs (default: the speaker's default)")
    ap.add_argument("--batch", type=int, default=None, help="frame batch (default: the pipeline's for this device)")
    ap.add_argument("--frames", type=int, default=48, help="frames timed per batched decoder measurement")
    ap.add_argument("--single-frames", type=int, default=6, help="frames timed frame by frame")
    ap.add_argument("--seconds", type=float, default=10.0, help="speech for the end-to-end and streaming runs")
    ap.add_argument("--memory-steps", type=int, default=2)
    ap.add_argument("--memory-seconds", default="10,60")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--decoder-steps", default="4,5,10,20,50", help="step counts of the decoder section")
    ap.add_argument("--untrained-resolution", type=int,
                    help="time the architecture at this resolution with random decoder weights (speed only)")
    add_timing_arguments(ap)
    ap.add_argument("--only", help="comma-separated sections to re-measure (" + ",".join(SECTIONS) + "); "
                    "the others are kept from the existing --out file")
    args = ap.parse_args(argv)
    sections = set(SECTIONS) if not args.only else set(args.only.split(","))
    if not sections <= set(SECTIONS):
        ap.error(f"--only: unknown sections {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    if args.skip_memory:
        sections.discard("memory")
    out = Path(args.out)
    kept = json.loads(out.read_text()) if args.only and out.is_file() else {}

    from talker import DAETalkerPipeline
    from talker.defaults import SCHEDULERS
    from talker.pipelines.ddim import compute_dtype

    scheduler = args.scheduler or SCHEDULERS[0]  # the default of `talker generate`
    pipe = DAETalkerPipeline.from_pretrained(args.model)
    if args.untrained_resolution:
        from talker.models import DAEDecoderUNet

        pipe.register_modules(unet=DAEDecoderUNet.from_config(pipe.unet.config, sample_size=args.untrained_resolution))
        if pipe.distilled_unet is not None:
            pipe.register_modules(distilled_unet=DAEDecoderUNet.from_config(
                pipe.distilled_unet.config, sample_size=args.untrained_resolution))
        sections -= {"solvers", "memory"}
    replaced = reinitialise(pipe, args.random_weights, args.untrained_refiner_scale)
    if replaced:  # quality needs the trained weights; the memory runs load the checkpoint afresh
        sections -= {"solvers", "memory"}
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    decoder = args.decoder or pipe.default_decoder
    steps = args.steps or pipe.default_steps(decoder)
    batch = args.batch or pipe.default_frame_batch_size()
    with torch.inference_mode():
        z = torch.from_numpy(pipe(speech(4.0), sampling_rate=16000, num_inference_steps=1).latents).to(args.device)
    z = z.repeat(-(-args.frames // len(z)), 1)[: args.frames]
    device_name = describe_device(args.device)
    results = {"model": args.model, "device": device_name, "resolution": pipe.resolution,
               "torch": torch.__version__, "default_decoder": decoder, "default_steps": steps,
               "default_scheduler": scheduler,
               "auto_precision": str(compute_dtype(torch.device(args.device), pipe.unet.dtype))}
    if args.untrained_resolution:
        results["decoder_weights"] = "random (speed only)"
    results.update(replaced)
    if kept and (kept.get("model"), kept.get("device")) != (args.model, device_name):
        raise SystemExit(f"--only: {out} was measured for {kept.get('model')} on {kept.get('device')}, "
                         f"not {args.model} on {device_name}; re-measure every section")
    results = {**kept, **results}
    if "decoder" in sections:
        results["decoder"] = decoder_speed(pipe, z, [int(k) for k in args.decoder_steps.split(",")], batch, args.frames, args.single_frames, args.device)
    if "solvers" in sections and args.data:
        results["solver_psnr"] = solver_quality(pipe, args.data, 32, [5, 10, 20], args.device)
    if "end_to_end" in sections:
        results["end_to_end_10s"] = end_to_end(pipe, steps, args.seconds, scheduler, args.device, decoder)
    if "decoder" in results and "end_to_end_10s" in results:
        paper = results["decoder"]["paper_recipe"]["fps"]
        results["speedup_vs_paper_recipe"] = round(results["end_to_end_10s"]["generate_video"]["fps"] / paper, 2)
    if "memory" in sections:
        results["memory"] = memory(args.model, [float(s) for s in args.memory_seconds.split(",")], args.memory_steps, args.device)
    write_results(out, results)
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    if "speedup_vs_paper_recipe" in results:
        print(f"end to end {results['end_to_end_10s']['generate_video']['fps']} frames/s, "
              f"{results['speedup_vs_paper_recipe']}× the paper's recipe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
