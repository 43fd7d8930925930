"""Quality benchmark of a speaker on held-out synthetic clips (also `talker evaluate`).

    python bench/quality.py --model checkpoints/astronaut-64 --data runs/bundled/heldout \
        --out bench/results/quality.json [--steps 2,1,4] [--clips 4] [--seconds 8]   # default: the decoder's steps

Writes JSON (per DDIM step count: PSNR/SSIM and their true-latent upper bound, mouth-opening
correlation, lips closed in silence, pose error and naturalness, jitter with fixed and fresh
noise, emotion changes) and a PNG plot next to it.
"""

import sys

from talker.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
