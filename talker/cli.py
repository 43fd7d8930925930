"""The ``talker`` command. Each subcommand is a thin shell over the package's functions.

    talker generate --model DIR_OR_REPO_ID --audio speech.wav --out out.mp4
"""

from __future__ import annotations

import argparse
import sys

from .errors import TalkerError

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
    return device, getattr(torch, dtype)


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .pipelines import DAETalkerPipeline
    from .pose import load_pose_file

    device, dtype = _device_and_dtype(args.device, args.dtype)
    emotion = _emotion_arg(args.emotion)
    pose = load_pose_file(args.pose_file) if args.pose_file else None
    if pose is not None and args.pose_mode == "predicted":
        raise TalkerError("--pose-file needs --pose-mode reference (a sequence) or static (one row)")
    if pose is not None and args.pose_mode == "static":
        pose = pose[0]
    pipe = DAETalkerPipeline.from_pretrained(args.model, dtype=dtype).to(device)
    pipe.set_progress_bar_config(desc="generating", disable=args.quiet)
    out = pipe.generate_video(
        args.audio,
        args.out,
        num_inference_steps=args.steps,
        pose_mode=args.pose_mode,
        pose=pose,
        emotion=emotion,
        generator=torch.Generator().manual_seed(args.seed),
        frame_batch_size=args.frame_batch_size,
        max_duration=args.max_seconds,
    )
    if not args.quiet:
        print(f"wrote {args.out}: {len(out.frames)} frames at {out.fps} fps, {pipe.resolution}×{pipe.resolution}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    import time

    from .data.synthetic import DEFAULT_VOICES, synth_dataset

    if args.seconds is not None and args.text_file is not None:
        raise TalkerError("give either --seconds or --text-file, not both")
    emotion: str | list[float] = "random"
    if args.emotion:
        if len(args.emotion) == 1 and args.emotion[0] in ("none", "random"):
            emotion = args.emotion[0]
        else:
            from .data.face import EMOTIONS

            given = _emotion_arg(args.emotion) or {}
            unknown = [k for k in given if k not in EMOTIONS]
            if unknown or any(not 0 <= v <= 1 for v in given.values()):
                raise TalkerError(f"--emotion takes none, random or NAME=VALUE with NAME in {', '.join(EMOTIONS)} and VALUE in [0, 1]")
            emotion = [given.get(name, 0.0) for name in EMOTIONS]
    voices = args.voices.split(",") if args.voices else list(DEFAULT_VOICES)
    start = time.perf_counter()
    metas = synth_dataset(args.out, clips=args.clips, seconds=args.seconds or 10.0, text_file=args.text_file,
                          seed=args.seed, resolution=args.resolution, voices=voices, emotion=emotion,
                          workers=args.workers, progress=not args.quiet)
    total = sum(m["duration"] for m in metas)
    print(f"wrote {len(metas)} clips, {total / 60:.1f} min of speech, to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_dataset

    index = prepare_dataset(args.videos, args.out, resolution=args.resolution, fps=args.fps, progress=not args.quiet)
    minutes = sum(c["duration"] for c in index["clips"]) / 60
    print(f"{args.out}: {len(index['clips'])} clips ({minutes:.1f} min), {len(index['skipped'])} skipped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talker", description="Speech-driven talking faces (DAE-Talker).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="audio → talking-face mp4", description="Generate a talking-face video from speech.")
    g.add_argument("--model", required=True, help="speaker checkpoint: a folder or a Hub repo id (owner/name)")
    g.add_argument("--audio", required=True, help="speech file (wav, flac, ogg, mp3, m4a, webm)")
    g.add_argument("--out", required=True, help="output .mp4")
    g.add_argument("--steps", type=int, default=20, help="DDIM steps per frame (default 20; the paper used 100)")
    g.add_argument("--pose-mode", choices=("predicted", "static", "reference"), default="predicted",
                   help="head motion: predicted from speech, static, or a reference sequence")
    g.add_argument("--pose-file", help="pose sequence (.csv yaw,pitch,roll or .npy (M,3), degrees)")
    g.add_argument("--emotion", nargs="*", metavar="NAME=VALUE", help="emotion intensities in [0,1], e.g. happy=0.6")
    g.add_argument("--seed", type=int, default=0, help="seed of the fixed noise image (default 0)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--dtype", choices=DTYPES, default="float32")
    g.add_argument("--frame-batch-size", type=int, help="frames denoised together")
    g.add_argument("--max-seconds", type=float, default=600.0, help="longest audio accepted (default 600)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("synth", help="make the synthetic speaker's videos with exact ground truth",
                       description="A real photo (scikit-image's astronaut) driven by espeak-ng speech: "
                                   "DIR/videos/*.mp4, DIR/truth/*.npz, DIR/meta.json.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--clips", type=int, help="number of clips (default 1; with --text-file: all lines)")
    s.add_argument("--seconds", type=float, help="approximate length of each clip (default 10)")
    s.add_argument("--text-file", help="one clip per line; its sentences become phrases")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resolution", type=int, default=256, help="frame side in pixels (default 256)")
    s.add_argument("--voices", help="comma-separated espeak-ng voices, e.g. en-us,en-gb+f3")
    s.add_argument("--emotion", nargs="*", metavar="SPEC", help="none, random (default) or NAME=VALUE ...")
    s.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="talking-head videos → training dataset",
                       description="Face crop, 16 kHz audio and head pose of every frame, for training.")
    p.add_argument("videos", nargs="+", help="video files or folders of videos")
    p.add_argument("--out", required=True, help="dataset folder (re-running adds new videos)")
    p.add_argument("--resolution", type=int, default=128, help="side of the face crops (default 128)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TalkerError as e:
        print(f"talker {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"talker {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
