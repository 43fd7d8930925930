#!/usr/bin/env bash
# Rebuild the bundled speaker (checkpoints/astronaut-64) from nothing, with the project's own
# commands only. Every stage resumes: run it again (with larger DAE_STEPS / S2L_STEPS) to train
# further; finished stages are skipped. runs/ does not travel between machines, the exported
# checkpoint does: INIT_FROM=checkpoints/astronaut-64 starts a new DAE run from its weights.
#
#   bash scripts/train_bundled_speaker.sh            # WORK=runs/bundled RES=64 DAE_STEPS=... S2L_STEPS=...
#   INIT_FROM=checkpoints/astronaut-64 DAE_STEPS=4000 bash scripts/train_bundled_speaker.sh
# The shipped checkpoint: a DAE run of 2,750 steps continued (--init-from) for 6,000 steps with
# normalize_z, on espeak-ng speech only; speech2latent then trained (with augmentation) on a mix of
# espeak-ng voices and a real recorded voice (Asterisk's prompts by Allison Smith, CC-BY-SA-3.0),
# keeping its best held-out step: 500 steps, 1,500 more with --init-from, 1,000 more with voice
# activity as a new input (--init-from), then 750 more with the loss on the mouth opening
# (--init-from; the default since), then 1,000 more on the data with 16 more espeak-ng voices
# (EXTRA_VOICES; --init-from, --mixed-precision bf16 on a CPU with AMX, step 500 kept), then 750
# more with 36 more variants (VARIANT_VOICES; --init-from, step 250 kept).
# S2L_FROM_DAE=checkpoints/astronaut-64 retrains only
# speech2latent and continues the distilled decoder on the speaker's frames, against the shipped
# DAE (what the current checkpoint did); the refiner (stage 6) was trained 7,000 steps on the
# exported speaker, then 1,500 more with a patch discriminator (--adv-weight 0.02).
# Every dataset is cut with the training data's square (`talker prepare --crop-from "$WORK/data"`);
# the shipped DAE, speech2latent, warp and live refiner were trained on clips framed one by one
# (before `talker prepare` kept a speaker's square; its refiner on clips cut with the square), so a
# WORK folder from then needs preparing again.
set -euo pipefail
WORK=${WORK:-runs/bundled}
RES=${RES:-64}
REFINE_RES=$((RES * 4))  # the refiner's side (stage 6)
DAE_STEPS=${DAE_STEPS:-6000}
S2L_STEPS=${S2L_STEPS:-3000}
S2L_FROM_DAE=${S2L_FROM_DAE:-}
DISTILL_PAIRS=${DISTILL_PAIRS:-10240}
DISTILL_STEPS=${DISTILL_STEPS:-3000}
FRAMES_STEPS=${FRAMES_STEPS:-500}
REFINER_STEPS=${REFINER_STEPS:-7000}
REFINER_ADV_STEPS=${REFINER_ADV_STEPS:-1500}
LIVE_STEPS=${LIVE_STEPS:-600}
LIVE_MORE_STEPS=${LIVE_MORE_STEPS:-1200}
LIGHT_STEPS=${LIGHT_STEPS:-3000}
LIVE_REFINER_STEPS=${LIVE_REFINER_STEPS:-4000}
GATE_STEPS=${GATE_STEPS:-3000}
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
[ -f "$WORK/heldout/dataset.json" ] || talker prepare "$WORK/synth-heldout/videos" --out "$WORK/heldout" --resolution "$RES" \
    --crop-from "$WORK/data"

# 2. the diffusion autoencoder (skipped when speech2latent is retrained against a shipped DAE)
if [ -z "$S2L_FROM_DAE" ]; then
    talker train dae --data "$WORK/data" --output "$WORK/dae" --resolution "$RES" --batch-size 16 \
        --lr "$DAE_LR" --snr-gamma "$SNR_GAMMA" ${INIT_FROM:+--init-from "$INIT_FROM"} \
        --max-steps "$DAE_STEPS" --checkpoint-every 250 --sample-every 500 --resume
fi

# 3. speech2latent learns voices, not one TTS: espeak-ng in 27 voices plus a real recorded voice,
#    force-aligned to its transcripts. The recordings come from Debian at data-preparation time.
TRAIN_VOICES=en-us,en-gb+f3,en-us+m3,en-gb-scotland,en-us+f2,en-029+m4,en-gb-x-rp+m1,en-us+f4,en-gb-x-gbclan+m6,en-us+klatt2,en-gb+Andy
# 16 more draws: other variants and accents, none of the held-out ones (unseen espeak-ng voices 0.75 -> 0.84
# mouth correlation, recorded prompts 0.79 -> 0.81). Written as espeak-ng spoke them: nine of the
# names first given here were variants it does not have (Adam, David, ...: the names are
# case-sensitive) and it spoke the plain accent, which `talker synth` now refuses
EXTRA_VOICES=en-us,en-gb+Alicia,en-us-nyc,en-029,en-gb-x-rp,en-us,en-gb-scotland+Michael,en-us,en-gb,en-us+klatt4,en-gb-x-gbclan,en-us-nyc,en-029,en-us+Jacky,en-gb,en-us+f3
# 36 variants that exist, spread over the seven training accents (the West Midlands accent and the
# held-out variants m7, f1, f5, Annie, grandpa, m2 stay unseen, and so does grandma)
VARIANT_VOICES=en-us+adam,en-us-nyc+david,en-029+belinda,en-gb-x-rp+benjamin,en-us+linda,en-us+steph,en-gb+zac,en-gb-x-gbclan+f2,en-us-nyc+m5,en-029+max,en-gb+quincy,en-us+Alex,en-gb+Andrea,en-gb-scotland+Denis,en-us+Gene,en-gb-x-rp+Hugo,en-gb-x-gbclan+Lee,en-us+Mike,en-us-nyc+aunty,en-029+caleb,en-us+ed,en-gb+edward,en-us+john,en-gb-scotland+norbert,en-029+paul,en-us-nyc+rob,en-gb-x-rp+robert,en-us+shelby,en-gb+travis,en-us+victor,en-gb-x-gbclan+m8,en-us+klatt3,en-gb+iven,en-us+steph2,en-gb-scotland+anika,en-029+klatt5
HELDOUT_VOICES=en-us+m7,en-gb-x-gbcwmd+f1,en-029+f5,en-us+Annie,en-us+grandpa,en-gb+m2   # never trained on
AST="$WORK/asterisk"
if [ ! -d "$AST/usr/share/asterisk/sounds" ]; then
    mkdir -p "$AST/deb"
    (cd "$AST/deb" && apt-get download asterisk-core-sounds-en-g722 asterisk-core-sounds-en)
    for deb in "$AST"/deb/*.deb; do dpkg-deb -x "$deb" "$AST"; done
fi
SPEECH="$AST/usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPTS="$AST/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
CREDIT="Allison Smith's recordings of the Asterisk core sound prompts (Debian asterisk-core-sounds-en-g722), CC-BY-SA-3.0"
[ -f "$WORK/synth-espeak/meta.json" ] || talker synth --out "$WORK/synth-espeak" --clips 48 --seconds 14 --seed 100 \
    --emotion random --voices "$TRAIN_VOICES"
[ -f "$WORK/synth-espeak-extra/meta.json" ] || talker synth --out "$WORK/synth-espeak-extra" --clips 48 --seconds 14 \
    --seed 500 --emotion random --voices "$EXTRA_VOICES"
[ -f "$WORK/synth-espeak-variants/meta.json" ] || talker synth --out "$WORK/synth-espeak-variants" --clips 64 \
    --seconds 14 --seed 600 --emotion random --voices "$VARIANT_VOICES"
[ -f "$WORK/synth-allison/meta.json" ] || talker synth --out "$WORK/synth-allison" --speech "$SPEECH" \
    --transcripts "$TRANSCRIPTS" --held-out 0.12 --split train --seconds 14 --clips 52 --seed 400 --emotion random \
    --speaker allison --credit "$CREDIT"
[ -f "$WORK/synth-allison-heldout/meta.json" ] || talker synth --out "$WORK/synth-allison-heldout" --speech "$SPEECH" \
    --transcripts "$TRANSCRIPTS" --held-out 0.12 --split heldout --seconds 10 --seed 401 --emotion none \
    --speaker allison --credit "$CREDIT"
[ -f "$WORK/synth-espeak-heldout/meta.json" ] || talker synth --out "$WORK/synth-espeak-heldout" --clips 8 --seconds 8 \
    --seed 300 --emotion none --voices "$HELDOUT_VOICES"
# recorded prompts in other languages, the same way: Spanish, French and Russian to train on (their
# held-out prompts kept for bench/real_speech.py --other), Italian for evaluation only
lang_speech() {  # CODE FOLDER SPEAKER TRAIN_CLIPS CREDIT
    local dir="$WORK/asterisk-$1"
    if [ ! -d "$dir/usr/share/asterisk/sounds/$2" ]; then
        mkdir -p "$dir/deb"
        (cd "$dir/deb" && apt-get download "asterisk-core-sounds-$1-g722" "asterisk-core-sounds-$1")
        for deb in "$dir"/deb/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    fi
    local args=(--speech "$dir/usr/share/asterisk/sounds/$2" --transcripts
                "$dir/usr/share/doc/asterisk-core-sounds-$1/core-sounds-$1.txt.gz" --language "$1" --held-out 0.12
                --speaker "$3" --credit "$5")
    if [ "$4" -gt 0 ] && [ ! -f "$WORK/synth-$1/meta.json" ]; then
        talker synth --out "$WORK/synth-$1" "${args[@]}" --split train --seconds 14 --clips "$4" --seed 410 --emotion random
    fi
    [ -f "$WORK/synth-$1-heldout/meta.json" ] || talker synth --out "$WORK/synth-$1-heldout" "${args[@]}" \
        --split heldout --seconds 10 --seed 402 --emotion none
    [ -f "$WORK/heldout-$1/dataset.json" ] || talker prepare "$WORK/synth-$1-heldout/videos" --out "$WORK/heldout-$1" \
        --resolution "$RES" --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
}
lang_speech es es_MX_f_Allison allison-es 16 "Allison Smith's recordings of the Asterisk core sound prompts in Mexican Spanish (Debian asterisk-core-sounds-es-g722), CC-BY-SA-3.0"
lang_speech fr fr_CA_f_June june 24 "June Wallack's recordings of the Asterisk core sound prompts in Canadian French (Debian asterisk-core-sounds-fr-g722), CC-BY-SA-3.0"
lang_speech ru ru_RU_f_IvrvoiceRU maxim-topal-ru 24 "The Asterisk core sound prompts in Russian provided by Maxim Topal, ivrvoice.ru (Debian asterisk-core-sounds-ru-g722), CC-BY-3.0"
lang_speech it it_IT_m_Carlo carlo 0 "Carlo Flora's recordings of the Asterisk core sound prompts in Italian (Debian asterisk-core-sounds-it-g722), CC-BY-3.0"
# speech2latent's data (English: a mix with the other languages' prompts and half the English
# clips lost on every English set); `talker prepare` and `talker encode` run again only add what is new
talker prepare "$WORK/synth-espeak/videos" "$WORK/synth-allison/videos" "$WORK/synth-espeak-extra/videos" \
    "$WORK/synth-espeak-variants/videos" --out "$WORK/voices" --resolution "$RES" --crop-from "$WORK/data"
# the held-out sets keep their crops at the refiner's size too: bench/real_speech.py compares
# refined frames with truth frames of the same size
[ -f "$WORK/heldout-allison/dataset.json" ] || talker prepare "$WORK/synth-allison-heldout/videos" \
    --out "$WORK/heldout-allison" --resolution "$RES" --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
[ -f "$WORK/heldout-espeak/dataset.json" ] || talker prepare "$WORK/synth-espeak-heldout/videos" \
    --out "$WORK/heldout-espeak" --resolution "$RES" --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
S2L_DAE=${S2L_FROM_DAE:-$WORK/dae}
# (--ema-decay 0 below: these stages were trained and kept as their plain weights, before
# train s2l scored a moving average of them)
talker encode --data "$WORK/voices" --dae "$S2L_DAE"
talker train s2l --data "$WORK/voices" --dae "$S2L_DAE" --output "$WORK/s2l" --max-steps "$S2L_STEPS" \
    --checkpoint-every 500 --eval-every 250 --ema-decay 0 --resume

# 4. the few-step decoder, distilled from the DAE's 100-step DDIM (the shipped one: 10,240 pairs and
#    3,000 steps at batch 128 on one H100, about 7 minutes; on a CPU this step takes many hours)
if [ -z "$S2L_FROM_DAE" ]; then
    talker encode --data "$WORK/data" --dae "$WORK/dae"
    talker train distill --model "$WORK/dae" --data "$WORK/data" --output "$WORK/distill" \
        --pairs "$DISTILL_PAIRS" --max-steps "$DISTILL_STEPS" --eval-every 1000 --checkpoint-every 1000 --resume
fi
DISTILLED=${S2L_FROM_DAE:-$WORK/distill}

# 4b. the distilled decoder continued on the speaker's own frames (no teacher frames: a CPU can do
#     it), the loss weighted where the frames move: the two-step student's lips meet again
talker train distill --model "$S2L_DAE" --data "$WORK/voices" --output "$WORK/distill-frames" --pairs 0 \
    --frames-share 1 --motion-weight 4 --init-student "$DISTILLED" --batch-size 16 --lr 3e-5 \
    --max-steps "$FRAMES_STEPS" --eval-every 250 --checkpoint-every 250 --resume
DISTILLED=$WORK/distill-frames

# 5. the checkpoint folder (speaker.json and the model card list the voices speech2latent learned
#    from; with the refiner once it is trained)
export_speaker() {
    talker export --dae "$S2L_DAE" --s2l "$WORK/s2l" --distilled "$DISTILLED" --data "$WORK/voices" --out "$OUT" \
        ${REFINER:+--refiner "$REFINER"} \
        --speaker-name "astronaut-$RES" --dtype float16 \
        --source "talker synth: scikit-image's astronaut photo (Eileen Collins, NASA, public domain) driven by espeak-ng speech and by recorded prompts (Allison Smith, Asterisk core sounds, CC-BY-SA-3.0) through forced alignment" \
        --consent "This is a synthetic speaker made by the talker project from a public-domain NASA portrait (scikit-image's 'astronaut', Eileen Collins) animated by text-to-speech and by openly licensed recorded prompts of a professional voice artist (Allison Smith, CC-BY-SA-3.0). No recording of Eileen Collins' voice or face in motion was used. Do not use it to impersonate her or anyone else."
}
export_speaker

# 6. the refiner: the speaker at 4× the decoder's resolution, trained on its own crops at 256²
#    (rendered at 384² so that the 256² crops hold all the photo's detail) with what the exported
#    speaker's decoder makes of them as inputs; then the checkpoint again, with it
[ -f "$WORK/synth-refine/meta.json" ] || talker synth --out "$WORK/synth-refine" --clips 24 --seconds 8 --seed 700 \
    --emotion random --resolution 384
[ -f "$WORK/synth-refine-heldout/meta.json" ] || talker synth --out "$WORK/synth-refine-heldout" --clips 6 --seconds 8 \
    --seed 701 --emotion none --resolution 384
[ -f "$WORK/refine/dataset.json" ] || talker prepare "$WORK/synth-refine/videos" --out "$WORK/refine" \
    --resolution "$RES" --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
[ -f "$WORK/refine-heldout/dataset.json" ] || talker prepare "$WORK/synth-refine-heldout/videos" \
    --out "$WORK/refine-heldout" --resolution "$RES" --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
if [ -z "${REFINER:-}" ]; then
    talker train refiner --model "$OUT" --data "$WORK/refine" --output "$WORK/refiner" --max-steps "$REFINER_STEPS" --warp-reference \
        --checkpoint-every 250 --eval-every 250 --resume
    # then continued with a patch discriminator against the pixel loss's over-smoothing
    talker train refiner --model "$OUT" --data "$WORK/refine" --output "$WORK/refiner-adv" --warp-reference \
        --init-from "$WORK/refiner/refiner" --adv-weight 0.02 --max-steps "$REFINER_ADV_STEPS" \
        --checkpoint-every 250 --eval-every 250 --resume
    REFINER=$WORK/refiner-adv
    export_speaker
fi

# 7. live input: a streaming speech2latent (chunks of 3 frames: at most 80 ms of audio after a
#    frame heard), continued from the offline one on the same data, added to the checkpoint
talker train s2l --data "$WORK/voices" --dae "$S2L_DAE" --output "$WORK/s2l-live" --max-steps "$LIVE_STEPS" \
    --checkpoint-every 200 --eval-every 200 --chunk-frames 3 --ema-decay 0 --init-from "$OUT/speech_to_latent" --resume
talker add-live "$OUT" --s2l "$WORK/s2l-live"
#    then continued from those weights for LIVE_MORE_STEPS more (the shipped one: 1,200, step 1,000
#    kept by its own held-out score; live lip-sync on the held-out sets 0.741 / 0.757 against 0.725 /
#    0.705 before, bench/results/real_speech_stream_live_s2l1200.json)
talker train s2l --data "$WORK/voices" --dae "$S2L_DAE" --output "$WORK/s2l-live2" --max-steps "$LIVE_MORE_STEPS" \
    --checkpoint-every 200 --eval-every 200 --chunk-frames 3 --ema-decay 0 --init-from "$WORK/s2l-live/speech_to_latent" --resume
talker add-live "$OUT" --s2l "$WORK/s2l-live2"
#    and once more, scored and kept as the moving average of its weights (train s2l's default
#    --ema-decay 0.995; the shipped one: 1,200 steps at seed 1, step 800 kept; live lip-sync
#    0.746 / 0.780, bench/results/real_speech_stream_live_ema.json)
talker train s2l --data "$WORK/voices" --dae "$S2L_DAE" --output "$WORK/s2l-live3" --max-steps "$LIVE_MORE_STEPS" \
    --checkpoint-every 200 --eval-every 200 --chunk-frames 3 --seed 1 --init-from "$WORK/s2l-live2/speech_to_latent" --resume
talker add-live "$OUT" --s2l "$WORK/s2l-live3"

# 8. the voice gate (lips shut on babble): trained on speech2latent's clips mixed with noise and
#    babble (half of it made of one voice's clips), on noise and babble alone, and on the training
#    prompts of five recorded voices in five languages with Silero VAD's truth (Italian's Menardi
#    prompts only here); bidirectional, kept as a moving average. The shipped gate: 3,000 steps, step
#    2,750 kept, on these data without synth-espeak-variants
IT_PROMPTS="$WORK/asterisk-prompt-it"
if [ ! -d "$IT_PROMPTS/usr/share/asterisk/sounds" ]; then
    mkdir -p "$IT_PROMPTS/deb"
    (cd "$IT_PROMPTS/deb" && apt-get download asterisk-prompt-it-menardi-wav)
    for deb in "$IT_PROMPTS"/deb/*.deb; do dpkg-deb -x "$deb" "$IT_PROMPTS"; done
fi
SOUNDS=usr/share/asterisk/sounds
# (the shipped gate's synth clips: 24, 26 and 24 of the first three English sets and the three languages)
talker prepare "$WORK/synth-espeak/videos" "$WORK/synth-allison/videos" "$WORK/synth-espeak-extra/videos" \
    "$WORK/synth-es/videos" "$WORK/synth-fr/videos" "$WORK/synth-ru/videos" --out "$WORK/voices-gate" --resolution "$RES" \
    --crop-from "$WORK/data"
talker train gate --data "$WORK/voices-gate" --speech "$SPEECH" "$WORK/asterisk-es/$SOUNDS/es_MX_f_Allison" \
    "$WORK/asterisk-fr/$SOUNDS/fr_CA_f_June" "$WORK/asterisk-ru/$SOUNDS/ru_RU_f_IvrvoiceRU" \
    "$IT_PROMPTS/$SOUNDS/it_IT_f_Menardi" --speech-held-out 0.12 --babble-speeds 0.15 --bidirectional \
    --speech-credit "Asterisk prompts: Allison Smith (English, Spanish), June Wallack (French), Maxim Topal (Russian), Paola Dal Zot (Italian, by Marco Menardi); CC-BY-SA-3.0 / CC-BY-3.0" \
    --ema-decay 0.995 --output "$WORK/gate" --max-steps "$GATE_STEPS" --eval-every 250 --checkpoint-every 250 --resume
talker add-gate "$OUT" --gate "$WORK/gate"

# 9. emotion that shows: an expression warp of the decoder's frames (a flow and a colour change per
#    emotion, times its intensity), learned from paired takes: 24 lines in 8 voices recorded neutral
#    and at each emotion's full intensity (same lines, same performance), aligned by their sound and
#    framing, the move judged at 128² on the takes' own 256² crops, weighted most where each emotion's
#    takes differ from the neutral ones on average, its fields predicted at the decoder's side, its flow
#    where each pixel goes (turned into the backward flow that samples the frame);
#    1,500 steps (9 CPU minutes). (The decoders'
#    own emotion input, --method input, which the speaker had before, was taken out of its decoders:
#    neutral frames are the same either way.)
TAKE_VOICES=en-us,en-gb+f3,en-us+m3,en-gb-scotland,en-us+f2,en-029+m4,en-gb-x-rp+m1,en-us+f4
for take in none happy=1 sad=1 angry=1 surprised=1; do
    [ -f "$WORK/takes-${take%%=*}/dataset.json" ] && continue
    talker synth --out "$WORK/synth-takes-${take%%=*}" --clips 24 --seconds 8 --seed 700 --emotion "$take" --voices "$TAKE_VOICES"
    talker prepare "$WORK/synth-takes-${take%%=*}/videos" --out "$WORK/takes-${take%%=*}" --resolution "$RES" \
        --refiner-resolution "$REFINE_RES" --crop-from "$WORK/data"
done
[ -d "$OUT/expression" ] || talker add-emotion "$OUT" --method warp --neutral "$WORK/takes-none" \
    --data "$WORK/takes-happy" "$WORK/takes-sad" "$WORK/takes-angry" "$WORK/takes-surprised"   # skipped once added

# 10. the light decoder live input renders with: a UNet 16 channels wide taught by the speaker's
#     distilled decoder (one step), 3,000 steps at batch 32 (81 min on 2 cores)
talker train distill --model "$OUT" --data "$WORK/voices" --output "$WORK/light" --teacher distilled --teacher-steps 1 \
    --student-channels 16 --grid-steps 1 --grid-share 0.8 --motion-weight 4 --pairs 8192 --batch-size 32 --lr 1e-3 \
    --max-steps "$LIGHT_STEPS" --eval-every 250 --checkpoint-every 250 --resume
talker add-light "$OUT" --decoder "$WORK/light"

# 11. the live refiner: a narrower refiner (24 channels, 4 blocks, no warp) trained on what the
#     light decoder makes of the refiner's data, so that live input's every frame costs less at
#     256² on a CPU (the refiner still renders offline frames, and live ones on a GPU); 4,000 steps
#     at batch 16 (8 min on 2 cores). (16 channels and 3 blocks cost the same there and read the
#     lips worse: bench/results/real_speech_stream_live_refiner16.json)
talker train refiner --model "$OUT" --data "$WORK/refine" --output "$WORK/live-refiner" --channels 24 --num-blocks 4 \
    --up-channels 24 --decoder light --max-steps "$LIVE_REFINER_STEPS" --eval-every 500 --checkpoint-every 500 --resume
talker add-live-refiner "$OUT" --refiner "$WORK/live-refiner"
