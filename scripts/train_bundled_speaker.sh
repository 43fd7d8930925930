#!/usr/bin/env bash
# Rebuild the bundled speaker (checkpoints/astronaut-64) from nothing, with the project's own
# commands only. Every stage resumes: run it again (with larger DAE_STEPS / S2L_STEPS) to train
# further; finished stages are skipped. runs/ does not travel between machines, the exported
# checkpoint does: INIT_FROM=checkpoints/astronaut-64 starts a new DAE run from its weights.
#
#   bash scripts/train_bundled_speaker.sh            # WORK=runs/bundled RES=64 DAE_STEPS=... S2L_STEPS=...
#   INIT_FROM=checkpoints/astronaut-64 DAE_STEPS=4000 bash scripts/train_bundled_speaker.sh
# The shipped checkpoint: a DAE run of 2,750 steps continued (--init-from) for 6,000 steps with
# normalize_z, then 1,500 speech2latent steps. speech2latent overfits these 11 minutes: its held-out
# latent MSE is lowest at step 500 (0.91; 1.08 at 1,500, RUN/train_log.jsonl), though the mouth
# correlation at 1,500 is 0.82 (bench/results/quality.json).
set -euo pipefail
WORK=${WORK:-runs/bundled}
RES=${RES:-64}
DAE_STEPS=${DAE_STEPS:-6000}
S2L_STEPS=${S2L_STEPS:-1500}
DISTILL_PAIRS=${DISTILL_PAIRS:-10240}
DISTILL_STEPS=${DISTILL_STEPS:-3000}
DAE_LR=${DAE_LR:-2e-4}
SNR_GAMMA=${SNR_GAMMA:-5}
INIT_FROM=${INIT_FROM:-}
OUT=${OUT:-checkpoints/astronaut-$RES}
mkdir -p "$WORK"

# 1. data: ~12 minutes of training speech (6 voices, 140-190 wpm, random emotions at varied
#    intensities) and ~2 minutes of held-out clips from other seeds (other sentences)
[ -f "$WORK/synth-train/meta.json" ] || talker synth --out "$WORK/synth-train" --clips 48 --seconds 14 --seed 100 --emotion random
[ -f "$WORK/synth-heldout/meta.json" ] || talker synth --out "$WORK/synth-heldout" --clips 8 --seconds 14 --seed 200 --emotion random
[ -f "$WORK/data/dataset.json" ] || talker prepare "$WORK/synth-train/videos" --out "$WORK/data" --resolution "$RES"
[ -f "$WORK/heldout/dataset.json" ] || talker prepare "$WORK/synth-heldout/videos" --out "$WORK/heldout" --resolution "$RES"

# 2. the diffusion autoencoder, then the latents of every frame
talker train dae --data "$WORK/data" --output "$WORK/dae" --resolution "$RES" --batch-size 16 \
    --lr "$DAE_LR" --snr-gamma "$SNR_GAMMA" ${INIT_FROM:+--init-from "$INIT_FROM"} \
    --max-steps "$DAE_STEPS" --checkpoint-every 250 --sample-every 500 --resume
talker encode --data "$WORK/data" --dae "$WORK/dae"

# 3. speech2latent (log-mel front end: no downloaded weights)
talker train s2l --data "$WORK/data" --dae "$WORK/dae" --output "$WORK/s2l" --max-steps "$S2L_STEPS" \
    --checkpoint-every 500 --eval-every 250 --resume

# 4. the few-step decoder, distilled from the DAE's 100-step DDIM (the shipped one: 10,240 pairs and
#    3,000 steps at batch 128 on one H100, about 7 minutes; on a CPU this step takes many hours)
talker train distill --model "$WORK/dae" --data "$WORK/data" --output "$WORK/distill" \
    --pairs "$DISTILL_PAIRS" --max-steps "$DISTILL_STEPS" --eval-every 1000 --checkpoint-every 1000 --resume

# 5. the checkpoint folder
talker export --dae "$WORK/dae" --s2l "$WORK/s2l" --distilled "$WORK/distill" --data "$WORK/data" --out "$OUT" \
    --speaker-name "astronaut-$RES" --dtype float16 \
    --source "talker synth: scikit-image's astronaut photo (Eileen Collins, NASA, public domain) driven by espeak-ng speech" \
    --consent "This is a synthetic speaker made by the talker project from a public-domain NASA portrait (scikit-image's 'astronaut', Eileen Collins) animated by text-to-speech. No recording of the person's voice or face in motion was used. Do not use it to impersonate her or anyone else."
