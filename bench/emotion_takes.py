"""The expression warp on held-out paired takes: how far it moves the truth's own neutral frames,
against how far the emotional take of the same line moves them.

    python bench/emotion_takes.py --out bench/results/emotion_takes.json [--model checkpoints/astronaut-64] \
        [--neutral runs/bundled/takes256-none] [--data runs/bundled/takes256-happy ...] [--size 64] \
        [--read-from decoder] [--apply-to refined]

The takes that ``talker add-emotion --method warp`` holds out (every tenth line) are paired as it
pairs them (time by DTW of the speech, picture by the neutral take's crop); the neutral frames are
warped to each emotional frame's intensities, as the pipeline warps: the fields read off the
decoder-size frame, the move applied to the frame at the speaker's output size (its refiner's;
the takes' kept crops, ``talker prepare --refiner-resolution``, scaled to it; ``--size`` to choose,
e.g. the decoder's, where the probe reads every move smaller); ``--read-from decoder`` reads the
fields off the speaker's decoder's rendering of the neutral frames (encoded and decoded), as the
pipeline reads them off its own frames, not off the takes' (the takes' frames brought to where the
rendering has the face, an affine found by ECC: the decoder renders a take's face up to a pixel or
a degree off, about as far as a brow moves); ``--apply-to refined`` applies the move
to the speaker's refiner's rendering of the neutral takes' decoder-size frames instead of their
kept crops (the changes are then taken from that rendering, so the truth's includes the refiner's
error: read the slopes, not the ratios). All three sets are read by the same
MediaPipe face mesh as ``bench/emotion.py``'s (lip gap, mouth-corner lift, mouth width, brow
height, eye opening, ÷ the eye-corner distance); the ratio is (warped − neutral) ÷ (emotional −
neutral), feature by feature, averaged over the emotion's frames, for the features whose truth
change is more than 3 × its standard error, and ``half_over_full`` the warp's change at half the
intensities over its change at full (the issue's bar: 0.4–0.6); ``gap_slope`` and ``gap_slope_truth`` are the slopes of
the warped and the emotional frames' lip gap on the neutral ones', frame by frame (under 1: the
opening flattened). This is the warp alone, on the frames it was trained for, with neither
speech2latent nor the decoder in the way: where ``bench/emotion.py`` finds the speaker's move short
and this finds the warp's own move short, the warp is what falls short.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from talker.defaults import EXPRESSION_READ_FROM
from talker.evaluation.metrics import PROBE_FEATURES as FEATURES
from talker.evaluation.results import write_results

TAKES = tuple(f"runs/bundled/takes256-{name}" for name in ("happy", "sad", "angry", "surprised"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker with an expression warp (default: the bundled speaker)")
    parser.add_argument("--neutral", default="runs/bundled/takes256-none", help="the neutral takes (prepared)")
    parser.add_argument("--data", nargs="+", default=list(TAKES), help="the emotional takes (prepared)")
    parser.add_argument("--frames", type=int, default=200, help="frames per emotion (evenly spread)")
    parser.add_argument("--size", type=int, help="side the frames are read at (default: the speaker's output side)")
    parser.add_argument("--read-from", choices=EXPRESSION_READ_FROM, default="takes",
                        help="the frames the fields are read off: the takes' own, the decoder's rendering of "
                             "them, or that through the refiner scaled back down (as the pipeline reads them)")
    parser.add_argument("--apply-to", choices=("takes", "refined"), default="takes",
                        help="the frames the move is applied to: the takes' kept crops or the refiner's rendering")
    parser.add_argument("--out", default="bench/results/emotion_takes.json")
    args = parser.parse_args(argv)

    from talker import DAETalkerPipeline
    from talker.cli import bundled_speaker
    from talker.evaluation.metrics import FaceProbe, gap_slope
    from talker.hub import read_speaker
    from talker.pipelines.images import postprocess_frames
    from talker.training.data import split_clips
    from talker.training.distill import frames_to_x0
    from talker.training.expression import decoded_takes, load_takes, paired_frames

    model = args.model or bundled_speaker()
    pipe = DAETalkerPipeline.from_pretrained(model)
    if pipe.expression is None:
        raise SystemExit(f"{model} has no expression warp (talker add-emotion --method warp)")
    names = list(pipe.emotion_names)
    takes = load_takes(args.neutral, args.data)
    held = set(split_clips(takes["ids"])[1])
    size = args.size or pipe.output_resolution()
    source = takes["kept"]
    if size != pipe.resolution and not (source and source >= size):
        raise SystemExit(f"the takes kept no crops at {size}² or more (talker prepare --refiner-resolution)")
    sharp = (source, size) if size != pipe.resolution else None
    neutral = [c for c in takes["neutral"] if c.id in held]
    read = decoded_takes(pipe, neutral, refined=args.read_from == "refined") if args.read_from != "takes" else None
    pairs = paired_frames(neutral, [c for c in takes["emotional"] if c.id in held], len(names), takes["crops"], sharp,
                          read)
    if args.apply_to == "refined":
        if pipe.refiner is None or size != pipe.output_resolution():
            raise SystemExit("--apply-to refined needs a speaker with a refiner, read at its output side")
        with torch.inference_mode():
            refined = [pipe.refine_frames(frames_to_x0(pairs["neutral"][s : s + 128]))
                       for s in range(0, len(pairs["neutral"]), 128)]
        pairs["neutral_sharp"] = postprocess_frames(torch.cat(refined), "np")
    shown = ("neutral_sharp", "emotional_sharp") if sharp else ("neutral", "emotional")
    probe = FaceProbe()
    results = {"command": "python bench/emotion_takes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": str(model), "neutral": args.neutral, "data": args.data, "held_out_lines": sorted(held),
               "size": size, "read_from": args.read_from, "apply_to": args.apply_to,
               "expression": read_speaker(Path(model)).get("emotion") if Path(model).is_dir() else None,
               "features": FEATURES, "emotions": {}}
    for k, name in enumerate(names):
        rows = np.flatnonzero(pairs["emotion"][:, k].numpy() > 0)
        if not len(rows):
            continue
        rows = rows[np.linspace(0, len(rows) - 1, min(args.frames, len(rows))).round().astype(int)]
        def warp(scale: float) -> np.ndarray:
            with torch.inference_mode():
                out = pipe.expression(frames_to_x0(pairs["neutral_read" if read else "neutral"][rows]),
                                      pairs["emotion"][rows] * scale, onto=frames_to_x0(pairs[shown[0]][rows]))
            return probe.features(postprocess_frames(out, "np"))

        f_n, f_e = (probe.features(pairs[key][rows]) for key in shown)
        f_w, f_half = warp(1.0), warp(0.5)
        ok = ~(np.isnan(f_n).any(1) | np.isnan(f_e).any(1) | np.isnan(f_w).any(1) | np.isnan(f_half).any(1))
        d_truth, d_warp = f_e[ok] - f_n[ok], f_w[ok] - f_n[ok]
        d_half = (f_half[ok] - f_n[ok]).mean(0)
        t, se = d_truth.mean(0), d_truth.std(0) / np.sqrt(ok.sum())
        counted = np.abs(t) > 3 * se
        ratio = [round(float(w / tt), 3) if c else None for w, tt, c in zip(d_warp.mean(0), t, counted)]
        results["emotions"][name] = {"frames": int(ok.sum()), "truth_change": t.round(4).tolist(),
                                     "warped_change": d_warp.mean(0).round(4).tolist(),
                                     "counted": counted.tolist(), "ratio": ratio,
                                     "half_over_full": [round(float(h / w), 3) if c else None
                                                        for h, w, c in zip(d_half, d_warp.mean(0), counted)],
                                     "gap_slope": gap_slope(f_w[ok, 0], f_n[ok, 0]),
                                     "gap_slope_truth": gap_slope(f_e[ok, 0], f_n[ok, 0])}
        print(name, json.dumps(results["emotions"][name]), flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
