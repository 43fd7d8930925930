"""The ``talker`` command. Each subcommand is a thin shell over the package's functions.

    talker generate --model DIR_OR_REPO_ID --audio speech.wav --out out.mp4
"""

from __future__ import annotations

import argparse
import sys

from .defaults import (DATASET_RESOLUTION, DECODERS, DEFAULT_DISTILLED_STEPS, DEFAULT_MAX_DURATION, DEFAULT_STEPS,
                       EMOTION_INPUT, EMOTION_LEARNING, EMOTION_METHODS, EMOTION_WARP, EXPRESSION_FIELD_SCALES,
                       EXPRESSION_READ_FROM, FRAMINGS, POSE_MODES, PRECISIONS, SCHEDULERS, SPEECH_LANGUAGE)
from .errors import TalkerError
from .training.configs import DAEConfig, DistillConfig, GateConfig, RefinerConfig, S2LConfig, add_options, from_options

DTYPES = ("float32", "float16", "bfloat16")


def _emotion_arg(values: list[str] | None) -> dict[str, float] | None:
    if not values:
        return None
    emotion = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise TalkerError(f"--emotion takes NAME=VALUE pairs (e.g. happy=0.6); got {item!r}")
        try:
            emotion[name] = float(value)
        except ValueError:
            raise TalkerError(f"--emotion {name}: {value!r} is not a number in [0, 1]") from None
    return emotion


def _device_and_dtype(device: str | None, dtype: str):
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TalkerError("--device cuda was asked for, but CUDA is not available here; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise TalkerError(f"--device must be cpu or cuda[:N]; got {device!r}")
    if dtype == "float16" and device == "cpu":
        raise TalkerError("--dtype float16 runs on a GPU only; on the CPU use float32 (the default) or bfloat16")
    return device, getattr(torch, dtype)


def bundled_speaker() -> str | None:
    """The speaker shipped in the repository's checkpoints/ folder, if any."""
    from pathlib import Path

    found = sorted(Path(__file__).resolve().parents[1].glob("checkpoints/*/model_index.json"))
    return str(found[0].parent) if found else None


def generation_jobs(audio: list[str], out: str) -> list[tuple[str, str]]:
    """(audio file, output mp4) pairs: files and folders of audio in, one mp4 each, every path
    checked before any work.

    One file with ``--out x.mp4`` writes that file; otherwise ``--out`` is a folder (existing, or
    a new name without a file extension) of ``<audio name>.mp4``."""
    from pathlib import Path

    from .audio import AUDIO_FILE_TYPES
    from .video import check_output_path

    files: list[Path] = []
    for item in audio:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower().lstrip(".") in AUDIO_FILE_TYPES)
            if not found:
                raise TalkerError(f"{item}: no audio files ({', '.join(AUDIO_FILE_TYPES)}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise TalkerError(f"{item}: not found (no such audio file or folder)")
    target = Path(out)
    as_file = target.suffix and not target.is_dir()  # a name with an extension is a file, unless a folder has it
    if len(files) == 1 and (as_file or target.suffix.lower() == ".mp4"):
        return [(str(files[0]), str(check_output_path(target, (".mp4",))))]
    if as_file:
        raise TalkerError(f"{len(files)} audio files need --out to be a folder (one <name>.mp4 each), not {out}")
    if target.exists() and not target.is_dir():
        raise TalkerError(f"--out {out} is a file; {len(files)} audio files need a folder")
    stems = [f.stem for f in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise TalkerError(f"several inputs are called {', '.join(clashes)}; outputs would overwrite each other")
    return [(str(f), str(check_output_path(target / f"{f.stem}.mp4", (".mp4",)))) for f in files]


def cmd_generate(args: argparse.Namespace) -> int:
    from .pose import load_pose_file

    # what the command line gets wrong fails first, before the models are imported and loaded
    emotion = _emotion_arg(args.emotion)
    pose = load_pose_file(args.pose_file) if args.pose_file else None
    if pose is not None and args.pose_mode == "predicted":
        raise TalkerError("--pose-file needs --pose-mode reference (a sequence) or static (one row)")
    if pose is not None and args.pose_mode == "static":
        pose = pose[0]
    jobs = generation_jobs(args.audio, args.out)
    device, dtype = _device_and_dtype(args.device, args.dtype)

    import torch
    from accelerate import PartialState

    from .pipelines import DAETalkerPipeline
    from .pipelines.ddim import use_scheduler

    state = PartialState(cpu=not torch.cuda.is_available())  # with no GPU, torchrun/accelerate give MULTI_CPU
    if state.num_processes > 1:  # under `accelerate launch`: one process per GPU (or CPU slice)
        device = str(state.device)
    model = args.model or bundled_speaker()
    if model is None:
        raise TalkerError("no --model given and no bundled speaker in checkpoints/; pass a folder or Hub repo id")
    pipe = DAETalkerPipeline.from_pretrained(model, dtype=dtype).to(device)
    decoder = args.decoder or pipe.default_decoder
    # a speaker without a distilled decoder, too many steps or a size it cannot write fail here, before any work
    pipe.steps_for(decoder, args.steps)
    pipe.written_size(args.output_size, not args.no_watermark)
    if args.scheduler != "ddim" and decoder != "ddim":
        raise TalkerError(f"--scheduler {args.scheduler} applies to --decoder ddim; the distilled decoder runs its own DDIM")
    use_scheduler(pipe, args.scheduler)
    pipe.precision = args.precision
    pipe.set_progress_bar_config(desc="generating", disable=args.quiet)
    failed = 0
    with state.split_between_processes(jobs) as mine:
        for audio, out_path in mine:
            try:
                pipe.generate_video(
                    audio,
                    out_path,
                    num_inference_steps=args.steps,
                    decoder=decoder,
                    pose_mode=args.pose_mode,
                    pose=pose,
                    emotion=emotion,
                    generator=torch.Generator().manual_seed(args.seed),
                    frame_batch_size=args.frame_batch_size,
                    max_duration=args.max_seconds,
                    watermark=not args.no_watermark,
                    output_size=args.output_size,
                    refine=args.refine,
                )
            except TalkerError as e:
                if len(jobs) == 1:
                    raise
                message = str(e).removeprefix(f"{audio}: ")  # audio errors start with the file's name
                print(f"talker generate: {audio}: {message}", file=sys.stderr)  # the others go on
                failed += 1
                continue
            if not args.quiet:
                print(f"wrote {out_path}: {describe_video(out_path)}, "
                      f"{made_at(pipe, args.refine)}", flush=True)  # as each file is done, not at exit
    return 2 if failed else 0


def describe_video(path) -> str:
    """"119 frames at 25 fps, 256×256, with sound", read back from the file."""
    from .video import probe_video

    info = probe_video(path)
    return (f"{info.frames} frames at {info.fps:g} fps, {info.width}×{info.height}"
            + (", with sound" if info.has_audio else ""))


def made_at(pipe, refine: bool) -> str:
    """How the frames were made: "decoded at 64×64, refined to 256×256"."""
    r, out = pipe.resolution, pipe.output_resolution(refine)
    return f"decoded at {r}×{r}" + (f", refined to {out}×{out}" if out != r else "")


def cmd_detect(args: argparse.Namespace) -> int:
    """Exit 0 when the watermark is found, 1 when not (2 on errors, as every command)."""
    import av

    from .watermark import detect_video

    d = detect_video(args.video, max_frames=args.max_frames)
    try:
        with av.open(str(args.video)) as c:
            tag = c.metadata.get("comment") or c.metadata.get("description")
    except av.error.FFmpegError:
        tag = None
    if d.found:
        print(f"{args.video}: watermark found: synthetic={'yes' if d.payload.synthetic else 'no'}, "
              f"model id {d.payload.model_id_hex}, confidence {d.score:.3f} over {d.frames} frames")
    else:
        print(f"{args.video}: no watermark found (confidence {d.score:.3f} over {d.frames} frames; "
              f"marked videos score above 0.15)")
    if tag:
        print(f"container tag: {tag}")
    return 0 if d.found else 1


def cmd_synth(args: argparse.Namespace) -> int:
    import time

    from .data.synthetic import DEFAULT_VOICES, synth_dataset

    if args.seconds is not None and args.text_file is not None:
        raise TalkerError("give either --seconds or --text-file, not both")
    if args.speech and args.text_file is not None:
        raise TalkerError("give either --speech (recordings) or --text-file (text for espeak-ng), not both")
    if args.speech and not args.transcripts:
        raise TalkerError("--speech needs --transcripts FILE ('name: text' lines, one per recording)")
    emotion: str | list[float] = "random"
    if args.emotion:
        if len(args.emotion) == 1 and args.emotion[0] in ("none", "random"):
            emotion = args.emotion[0]
        else:
            from .defaults import EMOTIONS

            given = _emotion_arg(args.emotion) or {}
            unknown = [k for k in given if k not in EMOTIONS]
            if unknown or any(not 0 <= v <= 1 for v in given.values()):
                raise TalkerError(f"--emotion takes none, random or NAME=VALUE with NAME in {', '.join(EMOTIONS)} and VALUE in [0, 1]")
            emotion = [given.get(name, 0.0) for name in EMOTIONS]
    voices = args.voices.split(",") if args.voices else list(DEFAULT_VOICES)
    start = time.perf_counter()
    metas = synth_dataset(args.out, clips=args.clips, seconds=args.seconds or 10.0, text_file=args.text_file,
                          seed=args.seed, resolution=args.resolution, voices=voices, emotion=emotion,
                          speech=args.speech, transcripts=args.transcripts, held_out=args.held_out, split=args.split,
                          speaker=args.speaker, credit=args.credit, language=args.language, workers=args.workers, progress=not args.quiet)
    total = sum(m["duration"] for m in metas)
    print(f"wrote {len(metas)} clips, {total / 60:.1f} min of speech, to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_dataset
    from .defaults import EMOTIONS

    given = _emotion_arg(args.emotion)
    wrong = sorted(k for k, v in (given or {}).items() if k not in EMOTIONS or not 0 <= v <= 1)
    if wrong:
        raise TalkerError(f"--emotion takes NAME=VALUE with NAME in {', '.join(EMOTIONS)} and VALUE in [0, 1]; "
                          f"got {', '.join(wrong)}")
    index = prepare_dataset(args.videos, args.out, resolution=args.resolution, fps=args.fps, progress=not args.quiet,
                            refiner_resolution=args.refiner_resolution,
                            emotion=None if given is None else [given.get(name, 0.0) for name in EMOTIONS],
                            framing=args.framing, crop_from=args.crop_from)
    minutes = sum(c["duration"] for c in index["clips"]) / 60
    print(f"{args.out}: {len(index['clips'])} clips ({minutes:.1f} min), {len(index['skipped'])} skipped")
    return 0


def cmd_train_dae(args: argparse.Namespace) -> int:
    from .training.dae import train_dae

    figures = train_dae(args.data, args.output, from_options(DAEConfig, args), resume=args.resume,
                        progress=not args.quiet, init_from=args.init_from)
    speed = (f"{figures['steps_per_s']:.2f} steps/s, {figures['images_per_s']:.1f} images/s"
             if figures["steps_this_run"] else "no steps left to train")
    print(f"{args.output}: {figures['steps']} steps, loss {figures['loss_avg']:.4f}, {speed}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from .training.encode import encode_dataset

    stats = encode_dataset(args.data, args.dae, progress=not args.quiet)
    print(f"{args.data}: latents of {stats['frames']} frames ({stats['z_dim']}-d)")
    return 0


def cmd_train_s2l(args: argparse.Namespace) -> int:
    from .training.s2l import train_s2l

    figures = train_s2l(args.data, args.dae, args.output, from_options(S2LConfig, args), resume=args.resume,
                        progress=not args.quiet)
    print(f"{args.output}: {figures['steps']} steps, loss {figures['loss_avg']:.4f}, held-out pose error "
          f"{figures.get('heldout_pose_mae_deg', 'n/a')} degrees")
    return 0


def cmd_train_distill(args: argparse.Namespace) -> int:
    from .training.distill import distill_decoder

    cfg = from_options(DistillConfig, args)
    figures = distill_decoder(args.model, args.data, args.output, cfg, resume=args.resume, progress=not args.quiet)
    psnr = figures.get("val_psnr", {}).get("student", {})
    target = f"the teacher's {cfg.teacher_steps}-step frames" if cfg.pairs else "held-out frames"
    loss = "n/a" if figures.get("loss_avg") is None else f"{figures['loss_avg']:.5f}"  # none when resumed at the end
    print(f"{args.output}: {figures['steps']} steps, loss {loss}; held-out PSNR against "
          f"{target} by step count: {psnr}")
    return 0


def cmd_train_refiner(args: argparse.Namespace) -> int:
    from .training.refiner import train_refiner

    figures = train_refiner(args.model, args.data, args.output, from_options(RefinerConfig, args), resume=args.resume,
                            progress=not args.quiet)
    print(f"{args.output}: {figures['steps']} steps; held-out PSNR {figures.get('psnr_refined', float('nan')):.2f} dB "
          f"(bicubic {figures.get('psnr_bicubic', float('nan')):.2f} dB), sharpness "
          f"{figures.get('sharpness_refined', float('nan')):.2f}× the truth's (bicubic "
          f"{figures.get('sharpness_bicubic', float('nan')):.2f}×)")
    return 0


def cmd_train_gate(args: argparse.Namespace) -> int:
    from .training.gate import train_gate

    figures = train_gate(args.data, args.output, from_options(GateConfig, args), resume=args.resume,
                         progress=not args.quiet, speech=args.speech, speech_credit=args.speech_credit)
    best = figures["best"]
    print(f"{args.output}: {figures['steps']} steps; kept step {best.get('step')}: held-out speech passed "
          f"{best.get('speech_passed', float('nan')):.1%} ({best.get('speech_in_babble_passed', float('nan')):.1%} "
          f"with babble at 10 dB), pauses shut {best.get('pauses_shut', float('nan')):.1%}, babble alone shut "
          f"{best.get('babble_alone_shut', float('nan')):.1%}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_speaker

    out = export_speaker(args.dae, args.s2l, args.data, args.out, speaker_name=args.speaker_name,
                         consent=args.consent, source=args.source, dtype=args.dtype, distilled_run=args.distilled,
                         refiner_run=args.refiner, live_s2l_run=args.live_s2l, gate_run=args.voice_gate)
    print(f"wrote {out}")
    return 0


def cmd_add_live(args: argparse.Namespace) -> int:
    from .training.export import add_live_s2l

    folder = add_live_s2l(args.speaker, args.s2l)
    print(f"{folder}: live_speech_to_latent/ from {args.s2l}; `stream(..., live=True)` uses it")
    return 0


def cmd_add_refiner(args: argparse.Namespace) -> int:
    from .hub import read_speaker
    from .training.export import add_refiner

    folder = add_refiner(args.speaker, args.refiner)
    print(f"{folder}: refiner/ from {args.refiner}; frames are rendered at {read_speaker(folder)['output_resolution']}²")
    return 0


def cmd_add_live_refiner(args: argparse.Namespace) -> int:
    from .training.export import add_live_refiner

    folder = add_live_refiner(args.speaker, args.refiner)
    print(f"{folder}: live_refiner/ from {args.refiner}; live input's frames are refined by it")
    return 0


def cmd_add_light(args: argparse.Namespace) -> int:
    from .training.export import add_light_decoder

    folder = add_light_decoder(args.speaker, args.decoder)
    print(f"{folder}: light_unet/ from {args.decoder}; live input renders with it (decoder='light' elsewhere)")
    return 0


def cmd_add_gate(args: argparse.Namespace) -> int:
    from .training.export import add_voice_gate

    folder = add_voice_gate(args.speaker, args.gate)
    print(f"{folder}: voice_gate/ from {args.gate}; the mouth shuts where it hears no foreground voice")
    return 0


def cmd_add_emotion(args: argparse.Namespace) -> int:
    from .training.emotion import add_emotion

    learn = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                ("seed", args.seed)) if v is not None}
    if args.method == "warp":
        learn.update({k: v for k, v in (("channels", args.channels), ("smooth_weight", args.smooth_weight),
                                        ("motion_weight", args.motion_weight), ("sharp_side", args.sharp_side),
                                        ("change_weight", args.change_weight), ("field_scale", args.field_scale),
                                        ("read_from", args.read_from), ("max_blur", args.max_blur),
                                        ("pyramid", args.pyramid), ("forward_flow", args.forward_flow),
                                        ("read_side", args.read_side), ("residual_scale", args.residual_scale))
                      if v is not None})
    elif args.method == "decoder":
        learn.update(knots=args.knots, hold_mouth=args.hold_mouth)
    elif args.method == "input":
        learn.update({"motion_weight": args.motion_weight} if args.motion_weight is not None else {},
                     decoders=tuple(args.decoders.split(",")) if args.decoders else None)
    else:
        learn = {}
    record = add_emotion(args.speaker, args.data, method=args.method, neutral=args.neutral, **learn)
    if args.method == "warp":
        held = record.get("heldout_error")
        print(f"{args.speaker}: expression/ moves the decoder's frames to show each emotion, trained on "
              f"{record['frames']} frames of {record['takes']} paired takes"
              + (f", the move judged at {record['sharp_side']}²" if record.get("sharp_side") else
                 ", the move judged at the decoder's side" + ("" if args.sharp_side == 0 else
                                                             " (the takes kept no larger crops: talker prepare "
                                                             "--refiner-resolution)"))
              + (f"; held-out pairs' error {held['neutral']} neutral, {held['warped']} warped" if held else ""))
    elif args.method == "input":
        print(f"{args.speaker}: the decoders ({', '.join(record['decoders'])}) take the emotion as an input, "
              f"trained on {record['frames']} frames")
    else:
        print(f"{args.speaker}: emotion shown along directions ({args.method}) fitted on {record['frames']} frames "
              f"(norms {', '.join(f'{v:g}' for v in record['direction_norms'])})")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .training.export import push_speaker

    print(f"pushed to {push_speaker(args.checkpoint, args.repo_id, private=args.private)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.metrics import evaluate_speaker, write_report

    try:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    except ValueError:
        raise TalkerError(f"--steps takes step counts separated by commas, e.g. 2 or 10,20; got {args.steps!r}") from None
    results = evaluate_speaker(args.model, args.data, steps_list=steps, max_clips=args.clips,
                               max_seconds=args.seconds, emotions=not args.no_emotion, progress=not args.quiet,
                               decoder=args.decoder, noise_test=not args.no_noise_test)
    png = args.out.rsplit(".", 1)[0] + ".png"
    write_report(results, args.out, png)
    for s in results["steps"]:
        m = results["steps"][str(s)]["mean"]
        print(f"{results['decoder']} {s:>3} steps: PSNR {m['psnr']:.2f} dB (upper bound {m['psnr_upper_bound']:.2f}), "
              f"mouth corr {m['mouth_corr']:.3f}, silent closed {m['silent_closed']:.2f}, "
              f"pose MAE {m['pose_mae_deg']}, jitter {m['jitter_fixed_noise']:.2f} "
              f"(fresh noise {m['jitter_fresh_noise']:.2f}, truth {m['jitter_truth']:.2f})")
    print(f"wrote {args.out} and {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talker", description="Speech-driven talking faces (DAE-Talker).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="audio → talking-face mp4", description="Generate a talking-face video from speech.")
    g.add_argument("--model", help="speaker checkpoint: a folder or a Hub repo id (default: the bundled speaker)")
    g.add_argument("--audio", required=True, nargs="+",
                   help="speech files (wav, flac, ogg, mp3, m4a, webm) or folders of them; under "
                        "`accelerate launch` they are shared out between the processes")
    g.add_argument("--out", required=True, help="output .mp4 (one input) or a folder (one <name>.mp4 per input)")
    g.add_argument("--decoder", choices=DECODERS,
                   help="distilled: the speaker's few-step decoder (the default where it has one); "
                        "ddim: the paper's DDIM decoder; light: a narrower distilled decoder (live input's)")
    g.add_argument("--steps", type=int,
                   help=f"denoising steps per frame (default: {DEFAULT_DISTILLED_STEPS} distilled, {DEFAULT_STEPS} DDIM; "
                        "the paper used 100 DDIM steps)")
    g.add_argument("--scheduler", choices=SCHEDULERS, default=SCHEDULERS[0],
                   help=f"deterministic solver of the DDIM decoder (default {SCHEDULERS[0]}, the paper's)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="decoder compute type; auto: bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16/AMX)")
    g.add_argument("--pose-mode", choices=POSE_MODES, default=POSE_MODES[0],
                   help="head motion: predicted from speech, static, or a reference sequence")
    g.add_argument("--pose-file", help="pose sequence (.csv yaw,pitch,roll or .npy (M,3), degrees)")
    g.add_argument("--emotion", nargs="*", metavar="NAME=VALUE", help="emotion intensities in [0,1], e.g. happy=0.6")
    g.add_argument("--seed", type=int, default=0, help="seed of the fixed noise image (default 0)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--dtype", choices=DTYPES, default="float32")
    g.add_argument("--frame-batch-size", type=int, help="frames denoised together")
    g.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_DURATION,
                   help=f"longest audio accepted (default {DEFAULT_MAX_DURATION:g})")
    g.add_argument("--output-size", type=int,
                   help="frame side written (default: 256 or the speaker's own (its refiner's), if larger)")
    g.add_argument("--no-refine", dest="refine", action="store_false",
                   help="the decoder's own frames, without the speaker's refiner (where it has one)")
    g.add_argument("--no-watermark", action="store_true",
                   help="leave the frames unmarked (the file still says it is synthetic); `talker detect` finds "
                        "the default invisible watermark")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    w = sub.add_parser("detect", help="is this video marked as made by talker?",
                       description="Decode the invisible watermark of a video: exit code 0 when found, 1 when not.")
    w.add_argument("video")
    w.add_argument("--max-frames", type=int, help="read at most this many frames")
    w.set_defaults(func=cmd_detect)

    s = sub.add_parser("synth", help="make the synthetic speaker's videos with exact ground truth",
                       description="A real photo (scikit-image's astronaut) driven by espeak-ng speech, or by "
                                   "recorded speech force-aligned to its transcripts (--speech, --transcripts): "
                                   "DIR/videos/*.mp4, DIR/truth/*.npz, DIR/meta.json.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--clips", type=int, help="number of clips (default 1; with --text-file: all lines)")
    s.add_argument("--seconds", type=float, help="approximate length of each clip (default 10)")
    s.add_argument("--text-file", help="one clip per line; its sentences become phrases")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resolution", type=int, default=256, help="frame side in pixels (default 256)")
    s.add_argument("--voices", help="comma-separated espeak-ng voices, e.g. en-us,en-gb+f3")
    s.add_argument("--speech", nargs="+", metavar="FILE_OR_DIR",
                   help="recorded speech instead of espeak-ng: audio files or folders (searched recursively)")
    s.add_argument("--transcripts", help="with --speech: 'name: text' lines (plain or .gz); name is the "
                                         "recording's path without extension, e.g. digits/7")
    s.add_argument("--held-out", type=float, default=0.0,
                   help="with --speech: fraction of recordings (by a stable hash of their names) kept for evaluation")
    s.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="with --speech: use the training part, the held-out part, or all recordings (default)")
    s.add_argument("--speaker", default="recorded", help="with --speech: a label for the recorded voice in meta.json")
    s.add_argument("--credit", help="with --speech: who recorded the speech and its licence, for model cards")
    s.add_argument("--language", default=SPEECH_LANGUAGE,
                   help="with --speech: the recordings' language as an espeak-ng voice (default en-us; fr, es, it, "
                        "ru, de, ...): the aligner's pronunciations come from espeak-ng in that language")
    s.add_argument("--emotion", nargs="*", metavar="SPEC", help="none, random (default) or NAME=VALUE ...")
    s.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="talking-head videos → training dataset",
                       description="Face crop, 16 kHz audio and head pose of every frame, for training.")
    p.add_argument("videos", nargs="+", help="video files or folders of videos")
    p.add_argument("--out", required=True, help="dataset folder (re-running adds new videos)")
    p.add_argument("--resolution", type=int, default=DATASET_RESOLUTION,
                   help=f"side of the face crops (default {DATASET_RESOLUTION}); `train dae` trains at this side")
    p.add_argument("--refiner-resolution", type=int,
                   help="also keep the crops at this side (--resolution × 2, 4, 8, …), the truth of `train refiner`")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--framing", choices=FRAMINGS,
                   help="speaker (a new dataset's default): every clip cut with one square, the speaker's, as a "
                        "camera that stays put frames them; clip: each clip with its own square (videos from "
                        "different set-ups). A dataset keeps the framing it was started with")
    p.add_argument("--crop-from", metavar="DATA_OR_SPEAKER",
                   help="cut the clips with the square of this prepared dataset of the same speaker, or of the "
                        "speaker exported from one (held-out clips, new takes), so that they are framed as the "
                        "speaker was trained")
    p.add_argument("--emotion", nargs="*", metavar="NAME=VALUE",
                   help="label every frame with the emotion the takes were recorded in, e.g. happy=1 (for "
                        "`talker add-emotion --method warp`; synthetic clips keep their own labels)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare)

    train = sub.add_parser("train", help="train a speaker: `train dae`, then `train s2l`")
    tsub = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    d = tsub.add_parser("dae", help="the diffusion autoencoder (encoder + DDIM decoder)")
    d.add_argument("--data", required=True, help="dataset folder from `talker prepare`")
    d.add_argument("--output", required=True, help="run folder (checkpoints, samples, dae/)")
    add_options(d, DAEConfig)
    d.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    d.add_argument("--init-from", help="start from the encoder and decoder of a speaker checkpoint or DAE run")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_train_dae)

    t = tsub.add_parser("s2l", help="speech2latent (needs `talker encode` latents)")
    t.add_argument("--data", required=True)
    t.add_argument("--dae", required=True, help="the `train dae` run the latents came from")
    t.add_argument("--output", required=True)
    add_options(t, S2LConfig)
    t.add_argument("--resume", action="store_true")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=cmd_train_s2l)

    x = sub.add_parser("export", help="trained runs → a speaker checkpoint folder with model card")
    x.add_argument("--dae", required=True)
    x.add_argument("--s2l", required=True)
    x.add_argument("--data", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--speaker-name", required=True)
    x.add_argument("--consent", required=True, help="who agreed to this model being made and shared, and for what")
    x.add_argument("--source", help="where the training video came from (default: from the dataset)")
    x.add_argument("--distilled", help="a `train distill` run of this DAE: its few-step decoder goes in too")
    x.add_argument("--refiner", help="a `train refiner` run for this decoder: the speaker renders at its size")
    x.add_argument("--live-s2l", help="a `train s2l --chunk-frames C` run: the streaming speech2latent of live input")
    x.add_argument("--voice-gate", help="a `train gate` run: the mouth shuts on babble (voices that are not the speaker's)")
    x.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage precision of the weights (float16 halves the files; loading casts back)")
    x.set_defaults(func=cmd_export)

    def add_component_parser(name: str, help: str, description: str, run_option: str, run_help: str, func) -> None:
        """An ``add-*`` command: a speaker folder and the one training run whose network it stores."""
        a = sub.add_parser(name, help=help, description=description)
        a.add_argument("speaker", help="speaker checkpoint folder")
        a.add_argument(run_option, required=True, help=run_help)
        a.set_defaults(func=func)

    add_component_parser("add-live", "add a streaming speech2latent (live input) to a speaker checkpoint",
                         "Store a `talker train s2l --chunk-frames C` run's network as the speaker's "
                         "live_speech_to_latent (what `stream(..., live=True)` uses), with its record in "
                         "speaker.json and the model card.",
                         "--s2l", "the streaming speech2latent's training run", cmd_add_live)
    add_component_parser("add-refiner", "add (or replace) the refiner of a speaker checkpoint",
                         "Store a `talker train refiner` run's network as the speaker's refiner (its frames "
                         "are then rendered at the refiner's size), with its record in speaker.json and the "
                         "model card.",
                         "--refiner", "the refiner's training run", cmd_add_refiner)
    add_component_parser("add-live-refiner", "add a live refiner (narrower, for live input) to a speaker checkpoint",
                         "Store a `talker train refiner` run's network (narrower than the speaker's refiner, "
                         "e.g. --channels 24 --num-blocks 4 --up-channels 24 without --warp-reference, trained on the light decoder's frames with "
                         "--decoder light) as the speaker's live_refiner: live input's frames are refined by "
                         "it, at the refiner's size, so that they keep up on a CPU.",
                         "--refiner", "the live refiner's training run", cmd_add_live_refiner)
    add_component_parser("add-light", "add a light decoder (live input's) to a speaker checkpoint",
                         "Store a `talker train distill --teacher distilled --student-channels C` run's "
                         "decoder as the speaker's light_unet: live input renders with it, and "
                         "decoder='light' (--decoder light) chooses it elsewhere.",
                         "--decoder", "the light decoder's training run", cmd_add_light)
    add_component_parser("add-gate", "add a voice gate (lips shut on babble) to a speaker checkpoint",
                         "Store a `talker train gate` run's network as the speaker's voice_gate, with its "
                         "record in speaker.json and the model card: the mouth opening is scaled by its "
                         "probability that a foreground voice speaks.",
                         "--gate", "the voice gate's training run", cmd_add_gate)

    m = sub.add_parser("add-emotion", help="teach a speaker to show emotions as its own labelled frames do",
                       description="Teach the speaker to show each emotion as its own labelled frames show it. "
                                   "--method warp (default) trains expression/, a small network that moves the "
                                   "decoder's frames by a flow and colour change per emotion in proportion to its "
                                   "intensity (neutral renders as before), on takes of the same lines recorded "
                                   "neutral (--neutral) and with each emotion (--data); the other methods learn "
                                   "from one prepared, encoded dataset with emotion labels: input gives the "
                                   "decoders the intensities as an input of their own, trained with the rest of "
                                   "them frozen; decoder learns offsets of z_sem through the speaker's decoder, at "
                                   "--knots intensities, stored in speech2latent; latents fits one direction of "
                                   "z_sem each to the encoder's latents by least squares.")
    m.add_argument("speaker", help="speaker checkpoint folder")
    m.add_argument("--data", required=True, nargs="+",
                   help="prepared dataset with emotion labels (and latents, `talker encode`, for input, decoder and "
                        "latents); for warp, one or more datasets of emotional takes")
    m.add_argument("--neutral", help="warp: the prepared neutral takes of the same lines, clip names as in --data")
    m.add_argument("--method", choices=EMOTION_METHODS, default=EMOTION_METHODS[0])
    m.add_argument("--steps", type=int, help=f"optimiser steps (warp: {EMOTION_WARP['steps']}, input: "
                                             f"{EMOTION_INPUT['steps']}, decoder: {EMOTION_LEARNING['steps']})")
    m.add_argument("--batch-size", type=int, help=f"frames per step (warp: {EMOTION_WARP['batch_size']}, input: "
                                                  f"{EMOTION_INPUT['batch_size']}, decoder: {EMOTION_LEARNING['batch_size']})")
    m.add_argument("--lr", type=float, help=f"Adam's step (warp: {EMOTION_WARP['lr']:g}; input: "
                                            f"{EMOTION_INPUT['lr']:g}; decoder: {EMOTION_LEARNING['lr']:g} latent spreads)")
    m.add_argument("--channels", type=int, help=f"the warp's width (warp: {EMOTION_WARP['channels']})")
    m.add_argument("--smooth-weight", type=float,
                   help=f"weight of the flows' roughness in the loss (warp: {EMOTION_WARP['smooth_weight']:g})")
    m.add_argument("--sharp-side", type=int,
                   help="warp: the side the move is learned at, from the crops the takes kept (`talker prepare "
                        f"--refiner-resolution`) (default {EMOTION_WARP['sharp_side']}; 0: at the decoder's side)")
    m.add_argument("--change-weight", type=float,
                   help="warp: weight of the loss on where each emotion's takes differ from the neutral ones on "
                        f"average (brows, eyelids; default {EMOTION_WARP['change_weight']:g})")
    m.add_argument("--field-scale", type=float, choices=EXPRESSION_FIELD_SCALES,
                   help="warp: the side its flow and colour fields are predicted at, over the decoder's "
                        f"(default {EMOTION_WARP['field_scale']:g})")
    m.add_argument("--read-from", choices=EXPRESSION_READ_FROM,
                   help="warp: the frames its fields are read off in training: the neutral takes' own (blurred "
                        "by up to --max-blur), the speaker's decoder's rendering of them, or that through its "
                        "refiner scaled back down to the decoder's side (as at use) "
                        f"(default {EMOTION_WARP['read_from']})")
    m.add_argument("--max-blur", type=float,
                   help="warp: the largest Gaussian blur (σ, pixels of the decoder's side) put on the neutral takes "
                        f"its fields are read off in training (default {EMOTION_WARP['max_blur']:g})")
    m.add_argument("--pyramid", type=int,
                   help="warp: coarser sides, each half the last, the loss also judges the move at "
                        f"(default {EMOTION_WARP['pyramid']})")
    m.add_argument("--forward-flow", action=argparse.BooleanOptionalAction,
                   help="warp: predict where each pixel goes (the move read where the network sees what moves) "
                        "rather than where each pixel of the moved frame comes from "
                        f"(default {'--forward-flow' if EMOTION_WARP['forward_flow'] else '--no-forward-flow'})")
    m.add_argument("--read-side", type=int,
                   help="warp: the side it reads its fields off: the decoder's (the default), or --sharp-side, "
                        "reading the takes' sharp frames (at use, the refiner's brought to that side)")
    m.add_argument("--residual-scale", type=float, choices=EXPRESSION_FIELD_SCALES,
                   help="warp: the side its colour residual is kept at, over the side it reads, no larger than "
                        "--field-scale (default: --field-scale's; coarser, it cannot paint an edge the flow should move)")
    m.add_argument("--seed", type=int)
    m.add_argument("--decoders", help=f"which decoders learn the input, comma-separated ({', '.join(DECODERS)}; "
                                      "default: every one the speaker has) (input)")
    m.add_argument("--motion-weight", type=float,
                   help="weight of the loss on where the face moves: 1 + w × temporal std / mean (warp: "
                        f"{EMOTION_WARP['motion_weight']:g}, input: {EMOTION_INPUT['motion_weight']:g})")
    m.add_argument("--knots", type=int, default=EMOTION_LEARNING["knots"],
                   help="offsets per emotion along its intensity, at 1/K … 1 (decoder; 1: one straight direction)")
    m.add_argument("--hold-mouth", action=argparse.BooleanOptionalAction, default=EMOTION_LEARNING["hold_mouth"],
                   help="keep the offsets off speech2latent's mouth read-out, leaving the opening it reads to speech (decoder)")
    m.set_defaults(func=cmd_add_emotion)

    u = sub.add_parser("push", help="upload a speaker checkpoint to the Hugging Face Hub")
    u.add_argument("checkpoint")
    u.add_argument("--repo-id", required=True, help="OWNER/NAME")
    u.add_argument("--private", action="store_true")
    u.set_defaults(func=cmd_push)

    v = sub.add_parser("evaluate", help="quality of a speaker on held-out synthetic clips (JSON + PNG)")
    v.add_argument("--model", required=True, help="speaker checkpoint folder or Hub repo id")
    v.add_argument("--data", required=True, help="held-out dataset: `talker prepare` of `talker synth` videos "
                                                           "(espeak-ng or recorded speech, --speech)")
    v.add_argument("--out", default="bench/results/quality.json")
    v.add_argument("--steps", help="step counts, comma-separated (default: the decoder's default, "
                                   f"{DEFAULT_DISTILLED_STEPS} distilled or {DEFAULT_STEPS} DDIM)")
    v.add_argument("--decoder", choices=DECODERS, help="distilled, ddim or light (default: the speaker's default)")
    v.add_argument("--clips", type=int, default=4)
    v.add_argument("--seconds", type=float, default=8.0, help="seconds of each clip that are generated")
    v.add_argument("--no-emotion", action="store_true", help="skip the emotion measurement")
    v.add_argument("--no-noise-test", action="store_true", help="skip lips-closed on 10 s of noise alone")
    v.add_argument("-q", "--quiet", action="store_true")
    v.set_defaults(func=cmd_evaluate)

    e = sub.add_parser("encode", help="EMA-encoder latents of every frame of a dataset")
    e.add_argument("--data", required=True)
    e.add_argument("--dae", required=True, help="a `train dae` run folder")
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=cmd_encode)

    f = tsub.add_parser("distill", help="a few-step decoder distilled from a speaker's DDIM decoder",
                        description="Distil a speaker's DDIM decoder into one that renders the same frames in 1-8 steps "
                                    "(needs `talker encode` latents of the dataset).")
    f.add_argument("--model", required=True, help="teacher: a `train dae` run or a speaker checkpoint folder")
    f.add_argument("--data", required=True, help="the encoded dataset the teacher was trained on")
    f.add_argument("--output", required=True, help="run folder (pairs, checkpoints, distilled_unet/)")
    add_options(f, DistillConfig)
    f.add_argument("--resume", action="store_true")
    f.add_argument("-q", "--quiet", action="store_true")
    f.set_defaults(func=cmd_train_distill)

    r = tsub.add_parser("refiner", help="a refiner: the speaker at 4× (8×) the decoder's resolution",
                        description="Train a network that renders the decoder's frames at the resolution of the "
                                    "dataset's refiner crops (`talker prepare --refiner-resolution`), on the speaker's "
                                    "own frames, with the speaker's decoder's renderings as inputs.")
    r.add_argument("--model", required=True, help="the speaker checkpoint whose decoder it refines")
    r.add_argument("--data", required=True, help="a dataset prepared with --refiner-resolution")
    r.add_argument("--output", required=True, help="run folder (cached inputs, checkpoints, samples/, refiner/)")
    add_options(r, RefinerConfig)
    r.add_argument("--resume", action="store_true")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_train_refiner)

    q = tsub.add_parser("gate", help="a voice gate: the lips shut on babble and noise, open for a voice",
                        description="Train a small causal network on the datasets' audio and per-frame truth "
                                    "(`talker synth` clips, espeak-ng or recorded) mixed with noise and babble, and "
                                    "on noise and babble alone: per frame, P(a foreground voice speaks).")
    q.add_argument("--data", nargs="+", default=[], help="prepared datasets with synthetic truth")
    q.add_argument("--speech", nargs="+", default=[],
                   help="folders (or files) of recorded speech, no transcript needed, any language: more voices "
                        "to speak and to make babble of (truth from Silero VAD)")
    q.add_argument("--speech-credit", help="who recorded the --speech folders and their licence (for the model card)")
    q.add_argument("--output", required=True, help="run folder (checkpoints, best.json, voice_gate/)")
    add_options(q, GateConfig)
    q.add_argument("--resume", action="store_true")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_train_gate)
    return parser


def _command(args: argparse.Namespace) -> str:
    return " ".join(x for x in (args.command, getattr(args, "stage", None)) if x)


class Terminated(BaseException):
    """SIGTERM (a container or job scheduler stopping the process), raised like Ctrl-C so that
    what is being written is removed, not left half-written."""


def _terminate(signum, frame):
    raise Terminated()


def _remove_unfinished_videos() -> None:
    """A stopped command leaves no hidden video file behind, even one whose writer was still
    being set up when the stop came."""
    from .video import remove_unfinished

    remove_unfinished()


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    import threading

    in_main = threading.current_thread() is threading.main_thread()  # only the main thread takes signals
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return args.func(args)
    except TalkerError as e:
        print(f"talker {_command(args)}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_unfinished_videos()
        print(f"talker {_command(args)}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        _remove_unfinished_videos()
        print(f"talker {_command(args)}: terminated", file=sys.stderr)
        return 143
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
