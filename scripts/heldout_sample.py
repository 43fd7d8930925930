"""A speaker on one held-out clip: sample video and contact sheet (docs/).

    python scripts/heldout_sample.py --model checkpoints/astronaut-64 --data runs/bundled/heldout \
        --clip 0200-00002 --out docs/bundled_speaker_heldout [--decoder distilled] [--steps 2] [--seconds 8]

Writes OUT.mp4 (the generated video with the clip's audio, watermarked, at least 256 px) and
OUT.png: 12 frames spread over the clip, the truth above and the generated frames below, at the
speaker's output size (its refiner's, where it has one; ``--no-refine``: the decoder's), tiles
shown at least 256 px (nearest-neighbour). The truth is the clip's crops at that size where the
dataset has them (``talker prepare --refiner-resolution``), else its training crops.
"""

import argparse

import numpy as np
import torch
from PIL import Image

from talker import DAETalkerPipeline
from talker.training.data import load_dataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="checkpoints/astronaut-64")
    ap.add_argument("--data", required=True, help="held-out clips with truth (`talker prepare` of `talker synth`)")
    ap.add_argument("--clip", help="clip id (default: the first)")
    ap.add_argument("--out", required=True, help="path without extension")
    ap.add_argument("--decoder", choices=("distilled", "ddim"))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--tiles", type=int, default=12)
    ap.add_argument("--no-refine", dest="refine", action="store_false")
    args = ap.parse_args()
    _, clips = load_dataset(args.data)
    clip = next((c for c in clips if c.id == args.clip), None) if args.clip else clips[0]
    if clip is None:
        raise SystemExit(f"no clip {args.clip} in {args.data}")
    n = min(clip.n_frames, int(args.seconds * 25))
    audio = clip.audio[: n * 640]
    pipe = DAETalkerPipeline.from_pretrained(args.model)
    out = pipe(audio, sampling_rate=16000, num_inference_steps=args.steps, decoder=args.decoder,
               generator=torch.Generator().manual_seed(0), refine=args.refine)
    size = out.frames.shape[1]
    truth = clip.frames_at(size) if clip.has_frames_at(size) else clip.frames
    pipe.write_video(args.out + ".mp4", out.frames, audio=audio, sampling_rate=16000)
    pick = np.linspace(0, n - 1, args.tiles).round().astype(int)
    tile = max(256, size)
    rows = [np.concatenate([np.asarray(Image.fromarray(f).resize((tile, tile), Image.NEAREST)) for f in frames[pick]], axis=1)
            for frames in (truth[:n], out.frames)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out + ".png")
    print(f"wrote {args.out}.mp4 and {args.out}.png ({n} frames, {pipe.default_decoder if args.decoder is None else args.decoder})")


if __name__ == "__main__":
    main()
