"""Lip-sync of a speaker on speech it never trained on: recorded voices, noise, unseen TTS voices.

    python bench/real_speech.py --model checkpoints/astronaut-64 \
        --real runs/real/heldout-allison --espeak runs/real/heldout-espeak --out bench/results/real_speech.json

Every set is a prepared held-out dataset (``talker prepare`` of ``talker synth`` videos) whose
truth is per frame: for recorded speech (``talker synth --speech``) it comes from the forced
alignment of the recording, for espeak-ng from its phoneme events. For each clip the speaker is
driven by the clip's audio and the generated frames are read by MediaPipe's face mesh (not part
of the model), as are the truth frames:

- ``real``: the recorded prompts as they are;
- ``real_noisy``: the same prompts with noise at ``--snr`` dB (pink, brown, hum or babble made
  from the other held-out clips; the noise also fills the pauses);
- ``noise_only``: ``--noise-seconds`` of noise alone at a speech-like level, per kind;
  ``noise_only_babble_draws`` (``--babble-draws`` > 1): that many draws of the babble (each its
  own talkers, 3 to 8, and stretches of them) with their mean, since one draw of 10 s says little;
- ``espeak``: espeak-ng clips in voices the speaker did not train on;
- ``other:NAME`` (``--other NAME=DIR``, repeated): recorded speech of other speakers and languages
  (``talker synth --speech ... --language``), as they are; ``noise_only_crowd``
  is babble alone made of these other voices at once (a crowd of different people, where the
  ``noise_only`` babble is the real set's one voice over itself), lips judged closed by the real
  set's truth threshold (without one: the first other set's);
- ``real_autoencoded``: no speech at all: the truth frames of the real set encoded and decoded by
  the same decoder and steps (and refiner), the most its renderer can show of perfect latents
  (the ceiling of the lip figures above that the renderer, not speech2latent, sets).

Frames are measured as the speaker returns them by default: refined to the refiner's size where
the speaker has one (``--no-refine``: the decoder's own frames); ``output_size`` says which. The
truth frames they are compared with (the probe's closed threshold and the truth-frame figures)
are at the same size where the datasets keep crops at it (``talker prepare
--refiner-resolution``), else the datasets' own crops; each set's ``truth_size`` says which.

Writes JSON (means per set, per-clip rows) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from talker.evaluation.metrics import FaceProbe, lipsync_scores, noise_only_scores
from talker.pipelines import DAETalkerPipeline
from talker.pipelines.dae_talker.generation import decode_latents
from talker.pipelines.ddim import compute_dtype
from talker.pipelines.images import postprocess_frames
from talker.training.augment import add_noise, make_noise
from talker.training.data import load_dataset
from talker.evaluation.results import describe_device, write_results

NOISE_FOR_CLIP = ("pink", "babble", "brown", "hum")


_TRUTH_GAPS: dict[str, np.ndarray] = {}  # the truth frames' lip gaps, read once per clip and size


def truth_size_for(index: dict, clips, size: int) -> int:
    """The side of the truth frames the generated frames (``size``) are compared with: ``size``
    where every clip keeps its crops at it (``talker prepare --refiner-resolution``), else the
    dataset's own crops (``index``: its ``dataset.json``), enlarged by the probe as the generated
    ones are."""
    return size if all(c.has_frames_at(size) for c in clips) else int(index["resolution"])


def held_out_set(path: str, max_clips: int, size: int) -> tuple[list, int]:
    """A prepared held-out set's first ``max_clips`` clips with truth, and the side of the truth
    frames their generated frames (``size``) are compared with."""
    index, clips = load_dataset(path)
    clips = [c for c in clips if (c.path / "truth.npz").is_file()][:max_clips]
    return clips, truth_size_for(index, clips, size)


def truth_gaps(probe, clip, n: int, size: int) -> np.ndarray:
    """The lip gaps of the clip's first ``n`` truth frames at side ``size`` (its crops at that
    size where it keeps them, else its own)."""
    key = f"{clip.path}:{n}:{size}"
    if key not in _TRUTH_GAPS:
        frames = clip.frames_at(size)[:n] if clip.has_frames_at(size) else clip.frames[:n]
        _TRUTH_GAPS[key] = probe.features(frames)[:, 0]
    return _TRUTH_GAPS[key]


def generate(pipe, audio: np.ndarray, *, seed: int, decoder, steps: int | None = None, live: bool = False,
             context: int | None = None, refine: bool = True) -> np.ndarray:
    """The speaker's frames for 16 kHz ``audio``: offline (``pipe(...)``), or live as from a
    microphone (``pipe.stream(..., live=True)`` on 20-ms blocks, the streaming speech2latent,
    its attention reaching back ``context`` frames; default: the pipeline's)."""
    kwargs = dict(generator=torch.Generator().manual_seed(seed), decoder=decoder, num_inference_steps=steps,
                  emotion=[0, 0, 0, 0], refine=refine)
    if live:
        blocks = (audio[i : i + 320] for i in range(0, len(audio), 320))
        context_arg = {} if context is None else {"window_frames": context}
        return np.stack(list(pipe.stream(blocks, 16000, live=True, **context_arg, **kwargs)))
    return pipe(audio, sampling_rate=16000, **kwargs).frames


def run_set(pipe, probe, clips, *, seconds: float, seed: int, decoder, steps: int | None = None,
            snr: float | None = None, babble_sources=None, desc: str = "clips", live: bool = False,
            context: int | None = None, refine: bool = True, truth_size: int) -> dict:
    from tqdm.auto import tqdm

    rows = []
    for k, clip in enumerate(tqdm(clips, desc=desc, unit="clip")):
        n = min(clip.n_frames, int(seconds * 25))
        truth = dict(np.load(clip.path / "truth.npz"))
        audio = clip.audio[: n * 640]
        noise_kind = None
        if snr is not None:
            noise_kind = NOISE_FOR_CLIP[k % len(NOISE_FOR_CLIP)]
            others = [a for j, a in enumerate(babble_sources) if j != k]
            noise = make_noise(noise_kind, len(audio), np.random.default_rng([seed, k]), others)
            audio = add_noise(audio, noise, snr)
        frames = generate(pipe, audio, seed=seed, decoder=decoder, steps=steps, live=live, context=context,
                          refine=refine)
        gap_gen = probe.features(frames)[:, 0]
        gap_truth = truth_gaps(probe, clip, n, truth_size)
        rows.append({"clip": clip.id, "frames": n, "noise": noise_kind, **lipsync_scores(gap_gen, gap_truth, truth, n)})
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    mean = {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in keys}
    mean["clips"] = len(rows)
    mean["seconds"] = round(sum(r["frames"] for r in rows) / 25, 1)
    return {"mean": mean, "truth_size": truth_size, "per_clip": rows}


def run_autoencoded(pipe, probe, clips, *, seconds: float, seed: int, decoder, steps: int | None = None,
                    refine: bool = True, truth_size: int) -> dict:
    """The lip figures of the clips' own frames after the speaker's encoder and decoder (and
    refiner, with ``refine`` where the speaker has one)."""
    from tqdm.auto import tqdm

    ae = pipe.autoencoder_for(decoder)
    settings = pipe.settings("real_autoencoded", generator=torch.Generator().manual_seed(seed), decoder=decoder,
                             num_inference_steps=steps, refine=refine)
    batch = settings.frame_batch_size
    rows = []
    for clip in tqdm(clips, desc="truth frames through the autoencoder", unit="clip"):
        n = min(clip.n_frames, int(seconds * 25))
        truth = dict(np.load(clip.path / "truth.npz"))
        z = torch.cat([ae.encode(clip.frames[i : min(i + 32, n)]) for i in range(0, n, 32)])
        frames = postprocess_frames(torch.cat([decode_latents(pipe, z[i : i + batch], settings)
                                               for i in range(0, n, batch)]), "np")
        gap_truth = truth_gaps(probe, clip, n, truth_size)
        rows.append({"clip": clip.id, "frames": n, **lipsync_scores(probe.features(frames)[:, 0], gap_truth, truth, n)})
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    mean = {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in keys}
    return {"mean": {**mean, "clips": len(rows), "steps": settings.steps}, "truth_size": truth_size, "per_clip": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/astronaut-64")
    ap.add_argument("--real", help="prepared held-out clips of recorded speech (talker synth --speech)")
    ap.add_argument("--espeak", help="prepared held-out espeak-ng clips in voices not trained on")
    ap.add_argument("--other", action="append", default=[], metavar="NAME=DIR",
                    help="prepared held-out clips of other recorded voices or languages (repeat for each)")
    ap.add_argument("--out", default="bench/results/real_speech.json")
    ap.add_argument("--decoder", help="distilled, ddim or light (default: the speaker's default; with --live, its "
                                      "live decoder)")
    ap.add_argument("--steps", type=int, help="denoising steps per frame (default: the decoder's default)")
    ap.add_argument("--clips", type=int, default=16, help="at most this many clips per set")
    ap.add_argument("--seconds", type=float, default=12.0, help="at most this many seconds of each clip")
    ap.add_argument("--snr", type=float, default=10.0, help="SNR (dB) of the noisy copy of the real set")
    ap.add_argument("--noise-seconds", type=float, default=10.0)
    ap.add_argument("--babble-draws", type=int, default=1,
                    help="draws of the real set's babble alone (the first is noise_only's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-noise", dest="noise", action="store_false",
                    help="lip-sync on the clips only: no noisy copy, autoencoded frames or noise-only sets (as --live)")
    ap.add_argument("--live", action="store_true",
                    help="frames made live (`stream(..., live=True)`, the speaker's streaming speech2latent) from "
                         "20-ms blocks; only the recorded and espeak-ng sets are run")
    ap.add_argument("--context", type=int, help="with --live: frames back speech2latent's attention reaches "
                                                "(default: the pipeline's live context)")
    ap.add_argument("--no-refine", dest="refine", action="store_false",
                    help="measure the decoder's own frames (default: refined, as the speaker returns them)")
    args = ap.parse_args(argv)

    pipe = DAETalkerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    probe = FaceProbe()
    tic = time.perf_counter()
    others = [o.partition("=")[::2] for o in args.other]
    bad = [o for o, (name, path) in zip(args.other, others, strict=True) if not name or not path]
    if bad:
        ap.error(f"--other takes NAME=DIR; got {', '.join(bad)}")
    results = {"command": "python bench/real_speech.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": args.model, "data": {"real": args.real, "espeak": args.espeak, **{f"other:{n}": d for n, d in others}},
               "device": describe_device("cpu"),
               "precision": str(compute_dtype(torch.device("cpu"), pipe.unet.dtype, pipe.precision)),
               "decoder": args.decoder or (pipe.live_decoder if args.live else pipe.default_decoder),
               "steps": args.steps or pipe.default_steps(args.decoder), "live": args.live,
               "context_frames": args.context, "output_size": pipe.output_resolution(args.refine), "sets": {}}
    common = dict(seconds=args.seconds, seed=args.seed, decoder=args.decoder, steps=args.steps, refine=args.refine)
    threshold = None
    if args.real:
        clips, common["truth_size"] = held_out_set(args.real, args.clips, results["output_size"])
        results["sets"]["real"] = run_set(pipe, probe, clips, **common, desc="recorded speech", live=args.live,
                                          context=args.context)
    if args.real and not args.live and args.noise:
        sources = [c.audio for c in clips]
        results["sets"]["real_noisy"] = run_set(pipe, probe, clips, **common, snr=args.snr, babble_sources=sources,
                                                desc=f"recorded speech + noise at {args.snr:g} dB")
        results["sets"]["real_noisy"]["snr_db"] = args.snr
        threshold = results["sets"]["real"]["mean"]["closed_threshold"]
        results["sets"]["real_autoencoded"] = run_autoencoded(pipe, probe, clips, **common)
        results["sets"]["noise_only"] = noise_only_scores(pipe, probe, threshold, seconds=args.noise_seconds,
                                                          babble_sources=sources, seed=args.seed, decoder=args.decoder,
                                                          steps=args.steps, refine=args.refine)
        if args.babble_draws > 1:
            draws = [results["sets"]["noise_only"]["babble"]] + [
                noise_only_scores(pipe, probe, threshold, seconds=args.noise_seconds, kinds=("babble",),
                                  babble_sources=sources, seed=args.seed + d, decoder=args.decoder,
                                  steps=args.steps, refine=args.refine)["babble"] for d in range(1, args.babble_draws)]
            results["sets"]["noise_only_babble_draws"] = {"draws": draws, "mean": float(np.mean(draws))}
    if args.espeak:
        clips, common["truth_size"] = held_out_set(args.espeak, args.clips, results["output_size"])
        results["sets"]["espeak"] = run_set(pipe, probe, clips, **common, desc="espeak-ng, unseen voices",
                                            live=args.live, context=args.context)
    crowd = []
    for name, path in others:
        clips, common["truth_size"] = held_out_set(path, args.clips, results["output_size"])
        results["sets"][f"other:{name}"] = run_set(pipe, probe, clips, **common, desc=f"recorded speech: {name}",
                                                   live=args.live, context=args.context)
        crowd += [c.audio for c in clips]
        if threshold is None:  # the truth frames' closed-lips threshold, from the first recorded set measured
            threshold = results["sets"][f"other:{name}"]["mean"]["closed_threshold"]
    if threshold is not None and len(crowd) > 1:
        results["sets"]["noise_only_crowd"] = noise_only_scores(
            pipe, probe, threshold, seconds=args.noise_seconds, kinds=("babble",), babble_sources=crowd,
            seed=args.seed, decoder=args.decoder, steps=args.steps, refine=args.refine)
    results["seconds"] = round(time.perf_counter() - tic, 1)
    write_results(args.out, results)
    for name, res in results["sets"].items():
        m = res["mean"] if isinstance(res.get("mean"), dict) else res
        print(name, json.dumps({k: v for k, v in m.items() if k in ("mouth_corr", "silent_closed", "open_ratio",
                                                                       "clips", "seconds", "mean", *NOISE_FOR_CLIP)}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
