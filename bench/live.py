"""Live generation as a microphone would drive it: latency from audio to frame, and whether it keeps up.

    python bench/live.py --out bench/results/live.json [--model checkpoints/astronaut-64] \
        [--seconds 60] [--block-ms 20] [--steps 1,2] [--sizes decoder,refined,full] [--decoders light,distilled]

Speech (the example recordings, repeated to ``--seconds``) is handed to ``pipe.stream(...,
live=True)`` in ``--block-ms`` blocks paced by the wall clock, as a microphone delivers them: block
k is not given before its last sample would have been spoken, and is given at once when the
generator asks for it late (a backlog). A frame's latency is the time from the moment the last
audio sample of that frame (its 40 ms) was spoken to the moment the frame comes out. Reported per
setting (decoder, its steps, with or without refining: ``refined`` by the speaker's live refiner
where it has one, else its refiner; ``full`` by its refiner, the live one set aside): median, 95th percentile and worst latency,
the latency's drift over the run (ms per second of input: above 0, a growing backlog), frames per
second over the run, the real-time factor (time not spent waiting for audio ÷ audio time), and
what one chunk of frames costs, stage by stage.

Each setting is also measured as a display shows it (``display``): a ``newest_only`` live session
(what the demo's live panel runs) is handed, at each push, all the audio spoken since the last one
(at least one block); it answers with the newest frame whose audio is in. Reported: pictures per
second, the age of each picture when shown (from the moment its frame's last audio sample was
spoken), and its drift.

``--device cuda`` runs the networks on a GPU (the default where there is one).
``--untrained-refiner-scale 8`` times a 512² refiner of the speaker's configuration with random
weights, and ``--random-weights`` re-initialises named components (speed does not depend on the
weights; the JSON names what was replaced).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from talker.evaluation.results import describe_device, write_results
from talker.evaluation.timing import add_timing_arguments, reinitialise

ROOT = Path(__file__).resolve().parents[1]


def speech(seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz speech: the example recordings one after another, repeated."""
    parts = []
    for wav in sorted((ROOT / "examples").glob("*.wav")):
        audio, rate = sf.read(wav, dtype="float32")
        if rate != 16000:
            from talker.audio import resample

            audio = resample(audio, rate, 16000)
        parts.append(audio if audio.ndim == 1 else audio.mean(1))
    one = np.concatenate(parts)
    return np.tile(one, int(np.ceil(seconds * 16000 / len(one))))[: int(seconds * 16000)]


def run_live(pipe, audio: np.ndarray, block: int, **kwargs) -> dict:
    """Feed ``audio`` in real time; the latency of every frame, and the compute time."""
    clock = {"t0": None, "waited": 0.0}

    def microphone():
        for start in range(0, len(audio), block):
            end = min(start + block, len(audio))
            due = clock["t0"] + end / 16000  # when its last sample has been spoken
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
                clock["waited"] += wait
            yield audio[start:end]

    out_times = []
    clock["t0"] = time.perf_counter()
    for _ in pipe.stream(microphone(), 16000, live=True, **kwargs):
        out_times.append(time.perf_counter() - clock["t0"])
    spoken = (np.arange(1, len(out_times) + 1) * 640) / 16000  # when each frame's last sample was spoken
    latency = np.asarray(out_times) - spoken
    duration = len(audio) / 16000
    drift = float(np.polyfit(spoken, latency, 1)[0])  # seconds of latency gained per second of input
    return {
        "frames": len(out_times),
        "latency_ms": {"median": round(float(np.median(latency)) * 1000, 1),
                       "p95": round(float(np.percentile(latency, 95)) * 1000, 1),
                       "max": round(float(latency.max()) * 1000, 1),
                       "first_frame": round(float(latency[0]) * 1000, 1),
                       "last_second_median": round(float(np.median(latency[-25:])) * 1000, 1),
                       # the median of each 10 s of input: a backlog grows from one to the next
                       "median_by_10s": [round(float(np.median(latency[i : i + 250])) * 1000, 1)
                                         for i in range(0, len(latency), 250)]},
        "drift_ms_per_s": round(drift * 1000, 2),
        "frames_per_s": round(len(out_times) / out_times[-1], 2),
        "wall_s": round(out_times[-1], 2),
        "audio_s": round(duration, 2),
        # the time spent computing (not waiting for the microphone) per second of audio
        "real_time_factor": round((out_times[-1] - clock["waited"]) / duration, 3),
    }


def run_display(pipe, audio: np.ndarray, block: int, **kwargs) -> dict:
    """A newest-only session fed in real time; the age of every picture when it is shown."""
    session = pipe.live_session(16000, newest_only=True, **kwargs)
    t0, sent, shown = time.perf_counter(), 0, []
    while sent < len(audio):
        spoken = int((time.perf_counter() - t0) * 16000) // block * block  # what the microphone has delivered
        upto = min(len(audio), max(sent + block, spoken))
        wait = t0 + upto / 16000 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        shown += [(index, time.perf_counter() - t0) for index, _ in session.push(audio[sent:upto])]
        sent = upto
    shown += [(index, time.perf_counter() - t0) for index, _ in session.end()]
    index, at = np.array([i for i, _ in shown]), np.array([t for _, t in shown])
    age = at - (index + 1) * 640 / 16000
    return {"pictures": len(shown), "pictures_per_s": round(len(shown) / at[-1], 2),
            "frames_skipped": session.skipped,
            "age_ms": {"median": round(float(np.median(age)) * 1000, 1),
                       "p95": round(float(np.percentile(age, 95)) * 1000, 1),
                       "max": round(float(age.max()) * 1000, 1)},
            "drift_ms_per_s": round(float(np.polyfit(at, age, 1)[0]) * 1000, 2)}


def chunk_costs(pipe, audio: np.ndarray, decoder: str, steps: int, refine: bool, context: int,
                repeats: int = 10) -> dict:
    """Milliseconds of each stage for one chunk of frames, as a live session computes it once its
    memory of ``context`` frames is full: the chunk's audio front end with voice activity, one step
    of speech2latent's stream, ``decoder`` and the refiner."""
    from talker.pipelines.ddim import ddim_decode

    session = pipe.live_session(16000, window_frames=context, decoder=decoder, num_inference_steps=steps,
                                refine=refine, generator=torch.Generator().manual_seed(0))
    c = session.chunk
    warm = (context // c + 1) * c
    session.audio.extend(np.resize(audio, (warm + (repeats + 1) * c) * 640), None)  # the speech repeated as needed
    settings = session.settings  # its decoder and refiner as the session runs them (CUDA graphs on a GPU)
    costs = {"front": [], "network": [], "decode": [], "refiner": []}

    def timed(name, fn):
        tic = time.perf_counter()
        out = fn()
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        costs[name].append(time.perf_counter() - tic)
        return out

    with torch.inference_mode():
        for first in range(0, warm + (repeats + 1) * c, c):
            features = timed("front", lambda: session.features(session.audio, first, first + c))
            out = timed("network", lambda: session.stream.step(features, shape_mouth=True))
            if first >= warm - c:  # the decoder's time from the chunk before the ones measured: a warm-up
                images = timed("decode", lambda: ddim_decode(settings.unet, settings.scheduler, out.z_sem[0],
                                                             settings.x_T, steps, c, precision=pipe.precision))
                if settings.refine:
                    timed("refiner", lambda: pipe.refine_frames(images, settings.refiner))
    ms = {name: round(float(np.mean(values[-repeats:])) * 1000, 1) if values else 0.0 for name, values in costs.items()}
    graphed = getattr(settings.unet, "call", None)  # the session's CUDA graphs, where it records them
    return {"frames": c, "front_end_and_voice_activity": ms["front"], "speech2latent": ms["network"],
            "decoder": ms["decode"], "refiner": ms["refiner"], "total": round(sum(ms.values()), 1), "audio_ms": c * 40,
            "cuda_graphs": None if graphed is None else graphed.failed or f"{graphed.graphs} recorded"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker with a streaming speech2latent (default: the bundled speaker)")
    parser.add_argument("--out", default="bench/results/live.json")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--block-ms", type=float, default=20.0, help="microphone block length")
    parser.add_argument("--steps", default="1,2", help="decoder step counts to measure")
    parser.add_argument("--decoders", help="decoders to measure, comma-separated (default: the speaker's live "
                                           "decoder: light where it has one)")
    parser.add_argument("--sizes", default="decoder,refined",
                        help="decoder: the decoder's own frames; refined: through the refiner live input uses (the "
                             "live refiner where the speaker has one); full: through the speaker's refiner")
    parser.add_argument("--context", type=int, help="frames back speech2latent's attention reaches (default: the pipeline's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="on a GPU, run the decoder and refiner "
                                                                       "launch by launch")
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    if not set(args.sizes.split(",")) <= {"decoder", "refined", "full"}:
        parser.error(f"--sizes takes decoder, refined and full, comma-separated; got {args.sizes!r}")

    from talker import DAETalkerPipeline
    from talker.cli import bundled_speaker
    from talker.defaults import LIVE_BLOCK_S
    from talker.defaults import LIVE_CONTEXT_FRAMES

    model = args.model or bundled_speaker()
    pipe = DAETalkerPipeline.from_pretrained(model)
    replaced = reinitialise(pipe, args.random_weights, args.untrained_refiner_scale)
    pipe = pipe.to(args.device)
    pipe.live_cuda_graphs = not args.no_cuda_graphs
    pipe.set_progress_bar_config(disable=True)
    s2l = pipe.streaming_speech_to_latent
    audio = speech(args.seconds)
    block = int(args.block_ms * 16)
    results = {"command": "python bench/live.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": str(model), **replaced, "device": describe_device(args.device), "threads": torch.get_num_threads(),
               "chunk_frames": s2l.config.chunk_frames, "lookahead_ms": s2l.lookahead_ms,
               "block_ms": args.block_ms, "context_frames": args.context or LIVE_CONTEXT_FRAMES, "settings": {}}
    live_refiner = pipe.live_refiner
    sizes = args.sizes.split(",")
    for size in sizes:
        refine = size in ("refined", "full")
        if (refine and pipe.refiner is None) or (size == "full" and live_refiner is None and "refined" in sizes):
            continue  # nothing to refine with, or the same setting as "refined"
        pipe.live_refiner = None if size == "full" else live_refiner
        refiner = ("live_refiner" if pipe.live_refiner is not None else "refiner") if refine else None
        for decoder in (args.decoders or pipe.live_decoder).split(","):
            for steps in (int(s) for s in args.steps.split(",")):
                kwargs = dict(num_inference_steps=steps, refine=refine, generator=torch.Generator().manual_seed(0),
                              window_frames=args.context or LIVE_CONTEXT_FRAMES, decoder=decoder)
                run_live(pipe, audio[: 16000 * 2], block, **kwargs)  # warm-up
                row = run_live(pipe, audio, block, **kwargs)
                row["per_chunk_ms"] = chunk_costs(pipe, audio, decoder, steps, refine,
                                                  args.context or LIVE_CONTEXT_FRAMES)
                kwargs["generator"] = torch.Generator().manual_seed(0)
                row["display"] = run_display(pipe, audio, int(LIVE_BLOCK_S * 16000), **kwargs)
                row["resolution"], row["decoder"], row["refiner"] = pipe.output_resolution(refine), decoder, refiner
                name = f"{row['resolution']}px_{decoder}_{steps}step" + ("_full_refiner" if size == "full" else "")
                results["settings"][name] = row
                print(name, json.dumps(row))
    pipe.live_refiner = live_refiner
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
