"""Generation defaults shared by the pipeline, the CLI and the demo (a light module: no torch)."""

SAMPLE_RATE = 16_000  # Hz of everything after talker.audio.load_audio
FPS = 25  # video frames per second the models are trained for; one frame is 640 samples

# denoising steps per frame (DAE-Talker: 100); the bundled speaker meets its quality bars at 10
# (bench/results/quality.json), where 20 closes the lips in fewer silent frames
DEFAULT_STEPS = 10
PRECISIONS = ("auto", "float32", "bfloat16")  # the decoder's compute type (talker.pipelines.ddim)
# a speaker's distilled decoder (talker train distill) renders the 100-step frames in 1-8 steps;
# one step is as faithful as two at half the time (the bundled speaker, bench/real_speech.py
# --steps 1 and 2: recorded prompts 0.824 / 98.6% lips shut in pauses vs 0.825 / 98.6%; truth
# frames through encoder and decoder 24.7 vs 24.5 dB)
DEFAULT_DISTILLED_STEPS = 1
MAX_DISTILLED_STEPS = 8  # it is trained for 1-8; more steps cost time and change nothing
MAX_STEPS = 1000  # the DDIM decoder's training schedule; the paper used 100
# which decoder renders the frames; default: distilled when the speaker has one. "light" is a
# narrower decoder distilled from the distilled one (`talker train distill --teacher distilled
# --student-channels 16`): live input's default where the speaker has one, a third of the time per frame
DECODERS = ("distilled", "ddim", "light")
# a live display (the demo's microphone panel) pushes this much audio at a time and shows the
# newest frame after each push
LIVE_BLOCK_S = 0.1
# how far back a live (streaming) speech2latent's attention and feature normalisation reach, in
# frames: about 2 s. When each chunk recomputed that much audio, 2 s kept the lip-sync of the 4-s
# training windows (held-out, live: recorded 0.763 vs 0.758 mouth correlation, espeak 0.729 vs
# 0.714, bench/real_speech.py --live --context) at half the time; with the state carried from
# chunk to chunk a chunk costs about the same at either
LIVE_CONTEXT_FRAMES = 48
# the emotions the synthetic data, speech2latent's emotion input and the demo's sliders name
EMOTIONS = ("happy", "sad", "angry", "surprised")
# how `talker add-emotion` shows emotion: "warp" trains an expression warp of the decoder's frames
# on the clips' frames (the default), "input" the decoders' own emotion input, "decoder" learns
# offsets of z_sem through the speaker's decoder, "latents" fits directions on the encoder's latents
EMOTION_METHODS = ("warp", "input", "decoder", "latents")
# its optimiser for "decoder": steps, frames per step, Adam's step in units of the latents' spread;
# offsets per emotion along its intensity (knots), kept off the mouth read-out (hold_mouth)
EMOTION_LEARNING = {"steps": 300, "batch_size": 16, "lr": 0.02, "seed": 0, "knots": 4, "hold_mouth": True}
# its optimiser for "input" (the emotion layers alone, Adam), and the loss's weight on where the face moves
EMOTION_INPUT = {"steps": 600, "batch_size": 16, "lr": 1e-3, "seed": 0, "motion_weight": 4.0}
# the sides an expression warp's fields may be predicted at, over the decoder frame's
EXPRESSION_FIELD_SCALES = (0.5, 1, 2)
# damped fixed-point steps that turn an expression warp's forward flow into the backward one it samples by,
# at each side from 32² up to the frame's, each side starting from the flow found at half of it: from the move
# itself, 12 steps left the inverse off by up to a pixel at 256² where the smile and surprise squeeze the
# frame, and surprised's brows at 79-87% of the face's visible move on the held-out clips (86-95% coarse to
# fine; bench/results/emotion_geometry_visible.json against emotion_geometry_visible_plain_inverse.json)
EXPRESSION_INVERSE_ITERATIONS = 12
# the frames a warp's fields are read off in training: the neutral takes' own (blurred by up to
# EMOTION_WARP's max_blur), the speaker's decoder's rendering of them, or that through its refiner and
# scaled back down to the decoder's side (what they are read off at use where there is a refiner)
EXPRESSION_READ_FROM = ("takes", "decoder", "refined")
# its optimiser for "warp" (Adam, cosine decay), the warp's width, the loss's weight on where the
# face moves and on the flows' roughness (none: at 0.05 the smile held out came to a third of its
# takes'), and the side its move is judged at, on the takes' kept crops. Held out, the bundled
# speaker's warp moved the mouth corners / width by 75% / 76% of the truth's smile when trained at
# the decoder's 64², 98% / 105% at 128², 101% / 108% at 256² (bench/results/emotion_takes_trained*.json,
# read at 256²); through the whole speaker 256² brought angry's lip gap closer (94% against 46% on
# bench/emotion.py's clip) but overshot the smile's lip gap further, so its shut lips read as parted
# (closed in 67% of the pauses against 96%); an absolute (Charbonnier) loss at 128² did no better.
# The loss also weighs where each emotion's takes differ from the neutral ones on average
# (change_weight), and the fields are predicted at the decoder frame's side (field_scale, one of
# EXPRESSION_FIELD_SCALES) rather than half of it: held out, sad's brows 54% -> 81%, happy's eyes
# 58% -> 101%, angry's lip gap 54% -> 66%, surprised's lip gap / width 38% / -143% -> 101% / 99%
# (bench/results/emotion_takes.json against emotion_takes_change0.json); at twice the side the
# smile's corners / width fell to 87% / 81% (emotion_takes_change1_field2.json), through the whole
# speaker to 71% / 67% though angry's lip gap reached 95% (emotion_warp_field2.json), and 3,000 steps
# changed little (emotion_takes_steps3000.json; today's warp at 4,000: a lower held-out pixel error,
# 29 of 36 features by the face's visible move against 31 with the plain inverse,
# emotion_geometry_steps4000.json). Read off the decoder's rendering of the held-out takes instead
# of the takes themselves (as at use), this warp keeps most of it but loses sad's brows (58%) and
# angry's lip gap (48%) (emotion_takes_read_decoder.json); one trained reading them there
# (read_from "decoder") brought angry's lip gap to 90% but sad's brows to 38%, happy's eyes to 71%
# (emotion_takes_trained_decoder.json); one reading the refiner's rendering scaled down (read_from
# "refined", as at use) took sad's brows through the speaker to 40/-5/19/4% and angry's lip gap to
# 22-41% (emotion_summary_read_refined_trained.json), and with the takes brought to where the rendering
# has the face still lost them on the held-out takes (sad's brows 45%;
# emotion_takes_read_refined_trained_aligned.json), so the takes' own frames stay the default
# The frames the fields are read off may be blurred by a random σ up to max_blur (pixels of the
# decoder's side) in training. Up to 1 (as soft as the decoder's own frames, which the fields were
# once read off) the warp learned smaller moves where it could not tell where a lid or brow was; read
# off the refiner's sharp frame at use, the warp trained on unblurred takes moves the face further
# (by the face's own geometry 21 of 36 features within 80-120% against 18; the smile's lids 79%
# against 66%), meets as many of MediaPipe's bars at 1.0 and more below it and in the mix, though two
# fewer lip-sync figures at the speaker's own head poses (bench/results/emotion_summary_blur0.json
# against emotion_summary_read_refined.json; emotion_geometry_blur.json). The loss may also judge the
# move at `pyramid` coarser sides (each half the last); 3 moved the face no further (20 of 36 by
# geometry against the warp then shipped's 22; bench/results/emotion_geometry_seen.json). Two seeds of one warp differ by
# 7 of those 36 (17 and 24), so a warp is chosen by more than one figure of one training run; with
# change_weight's maps leaving out the edge a reframed take repeats, seeds 0 / 1 / 2 gave 20 / 26 / 20
# against 17 / 24 / 21 (bench/results/emotion_geometry_covered.json, emotion_geometry_seed2.json).
# The flow is a forward one (forward_flow: where each pixel of the frame goes, turned backward by
# fixed-point iteration), so a mouth corner's move sits on the corner the network reads: the smile's
# corners / width came to 92-93% / 93-94% of the face's move in every seed against 82-85% / 81-85%,
# every half of the move to 0.50 of the whole (36 of 36 within 0.4-0.6 against 29-32), 20 and 26 of
# 36 within 80-120% with seeds 0 and 1, as before (bench/results/emotion_geometry_forward.json);
# fields at twice the side with it moved the face less (8 of 36, surprised's brows the wrong way).
# A warp may read its fields off the refiner's frame brought to the takes' sharp side (read_side,
# 128 here: the sharp neutral takes in training) rather than the decoder's: with the fields still
# at 64² (field_scale 0.5) 23 and 21 of 36 within 80-120% with seeds 0 and 1 (20 and 26 reading
# the decoder's; emotion_geometry_read_side_seed1.json) and a held-out pixel error of 0.0034 and
# 0.0033 (0.0037), with them at 128² 8 of 36 (bench/results/emotion_geometry_read_side.json);
# surprised's lids stay at 47-51% either way, so the decoder's side stays the default. Those counts
# take the renderer's landmarks as the face's move; read as its frames show it (surprise raises the
# lids' landmarks past the irises' tops, behind nearer triangles), seeds 0 and 1 meet 32 and 32 of
# 36, reading the sharp side 33 (bench/results/emotion_geometry_visible.json; with the plain inverse
# 31 and 30, reading the sharp side 33 and, seed 1, 28: emotion_geometry_visible_plain_inverse.json,
# emotion_geometry_visible_read_side_seed1.json). The colour residual
# may be kept coarser than the flow (residual_scale): at 64² under fields at 128², 12 of 36 by
# the landmarks (emotion_geometry_residual_scale.json), so it stays at the fields' side
EMOTION_WARP = {"steps": 1500, "batch_size": 16, "lr": 2e-3, "seed": 0, "channels": 32,
                "motion_weight": 4.0, "smooth_weight": 0.0, "sharp_side": 128, "change_weight": 1.0,
                "field_scale": 1.0, "read_from": "takes", "max_blur": 0.0, "pyramid": 0,
                "forward_flow": True, "read_side": None, "residual_scale": None}
# head motion: predicted from speech, held still, or a reference sequence
POSE_MODES = ("predicted", "static", "reference")
DEFAULT_MAX_DURATION = 600.0  # longest audio (seconds) accepted unless the caller says otherwise
# the DDIM decoder's deterministic solvers (talker.pipelines.ddim.use_scheduler); ddim is the paper's
SCHEDULERS = ("ddim", "dpmsolver++", "unipc")
# side of the face crops `talker prepare` makes; `talker train dae` trains at the dataset's side
DATASET_RESOLUTION = 128
#: how `talker prepare` frames a speaker's clips: one square for all of them (the default), or each its own
FRAMINGS = ("speaker", "clip")

NOISE_TEST_LEVEL_DBFS = -26.0  # RMS of the noise-alone tests (evaluate, train gate): a speech-like level
# the language recorded speech is aligned in unless told (an espeak-ng voice): the aligner's own
# acoustic model and pronouncing dictionary are US English
SPEECH_LANGUAGE = "en-us"
