"""How much of an emotion a warp can learn from unpaired frames: the emotion's own change of the
frames against the decoder's error on them.

    python bench/emotion_signal.py --out bench/results/emotion_signal.json [--model checkpoints/astronaut-64] \
        [--data runs/bundled/voices] [--clips 3] [--every 3]

On held-out clips of a prepared ``talker synth`` dataset with emotion labels (the clips
``split_clips`` keeps out of training), for frames whose intensities are not all zero:

- **emotion**: the frame's face state rendered by the synthetic renderer with its emotion against
  the same state neutral: the whole change the emotion makes;
- **decoder error**: the speaker's default decoder's rendering of the frame's own latent (``talker
  encode``; fresh noise per frame) against the frame: what a warp trained on unpaired frames
  (input: that rendering, target: the frame) sees besides the emotion;
- the rendering against the neutral and against the emotional truth (does the rendering keep any
  of the emotion?), and the video frame against the emotional truth (the probe of alignment).

All as squared error in [-1, 1] per pixel, weighted towards where the face moves (as the warp's
loss is), averaged over frames.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from emotion import render_truth
from talker.evaluation.results import write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker (default: the bundled speaker)")
    parser.add_argument("--data", default="runs/bundled/voices", help="prepared, encoded clips with truth and emotion")
    parser.add_argument("--clips", type=int, default=3, help="held-out clips with an emotion to read")
    parser.add_argument("--every", type=int, default=3, help="every n-th frame")
    parser.add_argument("--out", default="bench/results/emotion_signal.json")
    args = parser.parse_args(argv)

    from talker import DAETalkerPipeline
    from talker.cli import bundled_speaker
    from talker.training.data import load_dataset, split_clips
    from talker.training.distill import frames_to_x0, motion_weights
    from talker.training.emotion_input import labelled_frames
    from talker.pipelines.ddim import ddim_decode

    model = args.model or bundled_speaker()
    pipe = DAETalkerPipeline.from_pretrained(model)
    index, clips = load_dataset(args.data)
    train, held = split_clips([c for c in clips if c.emotion is not None])
    train_frames = labelled_frames(train)["frames"]
    weights = motion_weights(train_frames[:: max(1, len(train_frames) // 4096)], 4.0)
    n_e = len(pipe.emotion_names)
    truth_n, truth_e, video, latents, used = [], [], [], [], []
    for clip in held:
        em = clip.emotion[:, :n_e]
        idx = [k for k in range(0, min(clip.n_frames, len(em)), args.every) if em[k].sum() > 0]
        if not idx:
            continue
        crop = next(e["crop"] for e in index["clips"] if e["id"] == clip.id)
        truth = dict(np.load(clip.path / "truth.npz"))
        truth_n.append(render_truth(truth, np.zeros(n_e), idx, crop, pipe.resolution))
        truth_e.append(np.stack([render_truth(truth, em[k], [k], crop, pipe.resolution)[0] for k in idx]))
        video.append(clip.frames[idx])
        latents.append(clip.latents()[idx])
        used.append(clip.id)
        if len(used) == args.clips:
            break
    xn, xe, xs = (frames_to_x0(np.concatenate(a)) for a in (truth_n, truth_e, video))
    unet, scheduler = pipe.decoder_for(None)
    x_T = torch.randn((len(xs), unet.config.in_channels, pipe.resolution, pipe.resolution),
                      generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        rendered = ddim_decode(unet, scheduler, torch.from_numpy(np.concatenate(latents)).float(), x_T,
                               pipe.default_steps(None), 64, precision=pipe.precision).float()

    def err(a, b):
        return round(float(((a - b).pow(2).mean(1) * weights).mean()), 5)

    results = {"command": "python bench/emotion_signal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": str(model), "data": args.data, "clips": used, "frames": len(xs),
               "emotion_change": err(xe, xn), "decoder_error": err(rendered, xs),
               "rendered_vs_neutral_truth": err(rendered, xn), "rendered_vs_emotional_truth": err(rendered, xe),
               "video_vs_emotional_truth": err(xs, xe)}
    results["decoder_error_over_emotion_change"] = round(results["decoder_error"] / results["emotion_change"], 1)
    write_results(args.out, results)
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
