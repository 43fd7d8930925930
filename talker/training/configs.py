"""What defines each training run: one dataclass per trainer, saved as RUN/train_config.json, and
the one source of its defaults: ``talker train STAGE``'s options are built from the fields that
carry a ``help`` (:func:`add_options`, :func:`from_options`). A light module (no torch), read
when the CLI starts."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from ..defaults import DECODERS
from ..frontends import FRONTENDS

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def option(default: Any, help: str | None = None, **meta: Any):
    """A config field; with ``help``, also a command-line option (``meta``: ``choices``,
    ``parse`` for the value's type, ``flag`` for the option's name)."""
    return field(default=default, metadata={"help": help, **meta} if help else meta)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, e.g. 1,2,4,4; got {text!r}") from None


def run_config(batch_size: int, lr: float, max_steps: int, eval_every: tuple[int, str] | None = None) -> type:
    """The base dataclass of a trainer's config: the fields every run has, with this trainer's
    defaults (``eval_every``: its default and what is evaluated, where the trainer evaluates)."""
    fields = [("batch_size", int, option(batch_size, "per process")),
              ("lr", float, option(lr, "learning rate")),
              ("max_steps", int, option(max_steps, "steps to train to (with --resume: the new end)")),
              ("checkpoint_every", int, option(500, "steps between checkpoints (the newest three are kept)"))]
    if eval_every is not None:
        fields.append(("eval_every", int, option(eval_every[0], f"steps between {eval_every[1]}")))
    fields += [("seed", int, option(0, "seed of the weights and of every step's batch")),
               ("mixed_precision", str, option("auto", "auto: bf16 or fp16 on a GPU, none on a CPU",
                                               choices=MIXED_PRECISIONS)),
               ("extra", dict, field(default_factory=dict))]  # figures of the run's own making (e.g. init_from)
    return dataclasses.make_dataclass("RunConfig", fields)


@dataclass
class DAEConfig(run_config(batch_size=16, lr=1e-4, max_steps=10000)):
    """A diffusion autoencoder run (``talker train dae``)."""

    resolution: int | None = option(None, "frame side; default: the dataset's (`talker prepare --resolution`)")
    base_channels: int = option(32, "width of the UNet and encoder")
    channel_mult: tuple[int, ...] = option((1, 2, 4, 4), "UNet channel multipliers, e.g. 1,2,4,4", parse=_ints)
    encoder_channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)
    z_dim: int = option(512, "size of the semantic latent z_sem")
    normalize_z: bool = option(True, "leave z_sem unstandardised, as DiffAE (collapses on one speaker's frames)")
    dropout: float = 0.0
    snr_gamma: float | None = option(None, "Min-SNR-γ loss weighting (e.g. 5); default: plain noise MSE as DiffAE")
    ema_decay: float = 0.999
    sample_every: int | None = option(None, "reconstruction grid every N steps; default: with checkpoints")


@dataclass
class S2LConfig(run_config(batch_size=8, lr=3e-4, max_steps=5000,
                           eval_every=(250, "held-out scores (the best step is kept)"))):
    """A speech2latent run (``talker train s2l``)."""
    audio_frontend: str = option("mel", "speech features (talker.frontends)", choices=tuple(FRONTENDS))
    wav2vec2: str | None = option(None, "Wav2Vec2Model folder or Hub id (with --audio-frontend wav2vec2)")
    window_seconds: float = option(4.0, "length of the training windows")
    pose_weight: float = 0.5
    mouth_weight: float = option(1.0, "where the data has mouth truth, weight of the loss on the read-out mouth "
                                      "opening, in units of its variance (0: none)")
    hidden_size: int = option(256, "width of the Conformer")
    num_heads: int = 4
    ffn_size: int = 1024
    conv_kernel_size: int = 15
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dropout: float = 0.1
    held_out: float = 0.1
    feature_normalization: str = option("window", "window: each window's features are floored and mean-subtracted "
                                                  "(loudness and channel independent); dataset: the earlier global "
                                                  "standardisation only", choices=("window", "dataset"))
    mel_floor: float = 1e-10  # see Speech2Latent
    voice_activity: bool = option(True, "do not give the network Silero VAD's P(speech) as an input")
    augment: bool = option(True, "train on the clean audio only (default: noise, rooms, phone lines, codecs, gain, "
                                 "pitch, speed)")
    pause_windows: float = option(0.1, "with augmentation, share of training windows cut from a clip's pauses, noise "
                                       "added: whatever is heard, the lips must stay shut")
    pause_babble: float = option(0.0, "share of those pause windows whose noise is babble (other voices at once, "
                                      "no one speaking to the camera); the others, and all at 0, draw their noise as "
                                      "any window does")
    ema_decay: float = option(0.995, "decay of the moving average of the weights that is scored and kept (0: the "
                                     "weights as trained)")
    chunk_frames: int = option(0, "0: the paper's bidirectional network (needs 4-s windows); C > 0: a streaming one "
                                  "whose frames hear audio up to the end of their chunk of C frames only, for live "
                                  "input (`stream(..., live=True)`; e.g. 3: at most 80 ms look-ahead)")
    init_from: str | None = option(None, "start from these speech2latent weights (a speech_to_latent folder or a "
                                         "checkpoint's model.safetensors) instead of random ones")


@dataclass
class DistillConfig(run_config(batch_size=128, lr=2e-4, max_steps=4000, eval_every=(500, "held-out PSNR figures"))):
    """A decoder distillation run (``talker train distill``)."""
    teacher: str = option("ddim", "the decoder that renders the targets: the DAE's DDIM decoder, or a speaker's "
                                  "distilled decoder (for a light decoder: with --student-channels)",
                          choices=("ddim", "distilled"))
    teacher_steps: int = option(100, "teacher DDIM steps (the paper's 100; a distilled teacher's are 1-8)")
    pairs: int = option(16384, "teacher frames rendered for training (0 with --frames-share 1: none)")
    ema_decay: float = 0.999
    grid_steps: tuple[int, ...] = option((1, 2, 3, 4, 5, 6, 8), "step counts whose timesteps the student trains on "
                                         "(a light decoder for one step: 1)", parse=_ints)
    grid_share: float = option(0.5, "share of each batch on those timesteps (the rest uniform)")
    z_mix: float = 0.5
    pair_batch: int = 256
    frames_share: float = option(0.0, "share of each batch that is the dataset's own frames (target: the frame)")
    motion_weight: float = option(0.0, "weight the loss by where the frames move over time: 1 + w * temporal std / mean")
    init_student: str | None = option(None, "continue from this distilled decoder (a distill run or a speaker folder)")
    student_channels: int | None = option(None, "a new, narrower student of this base width instead of a copy of the "
                                                "teacher (a light decoder: 16)")
    emotion_share: float = option(0.5, "share of the teacher's frames rendered with random emotion intensities (a "
                                       "teacher that takes emotion)")


@dataclass
class RefinerConfig(run_config(batch_size=16, lr=2e-4, max_steps=2000,
                               eval_every=(250, "held-out PSNR and sharpness figures"))):
    """A refiner run (``talker train refiner``)."""
    channels: int = option(32, "width of the network")
    num_blocks: int = option(6, "residual blocks at the decoder's resolution")
    up_channels: int = option(32, "width after the first ×2 upsampling (halved at each further ×2, at least 16)")
    use_reference: bool = True
    warp_reference: bool = option(False, "also warp the reference's detail to each frame (a predicted flow and mask)")
    warp_weight: float = option(0.5, "with --warp-reference: weight of L1 between the warped reference and the truth "
                                     "(teaches the flow)")
    frames: int = option(2048, "training frames rendered by the decoder (spread over the training clips)")
    heldout_frames: int = 64
    patch: int = option(32, "low-resolution side of the training patches (0: whole frames)")
    grad_weight: float = option(1.0, "weight of the image-gradient loss against over-smoothing")
    aligned_share: float = option(0.5, "share of each batch whose input is the truth degraded, not the decoder's "
                                       "rendering")
    adv_weight: float = option(0.0, "weight of an adversarial term (a patch discriminator trained alongside, hinge "
                                    "loss) against the over-smoothing a pixel loss leaves; 0: none")
    disc_channels: int = option(32, "with --adv-weight: width of the discriminator's first layer")
    ema_decay: float = 0.995
    decoder: str | None = option(None, "the decoder that makes the inputs (default: the speaker's default)",
                                 choices=DECODERS)
    held_out: float = 0.1
    init_from: str | None = option(None, "start from this refiner (a refiner folder, e.g. a speaker's refiner/, of "
                                         "the same width and depth; its reference frame too) instead of new weights")


@dataclass
class GateConfig(run_config(batch_size=16, lr=2e-3, max_steps=3000,
                            eval_every=(250, "held-out figures (the best step is kept)"))):
    """A voice gate run (``talker train gate``)."""
    hidden_size: int = option(96, "width of the network")
    num_layers: int = 2
    bidirectional: bool = option(False, "each frame judged from its whole window, before and after (not for live "
                                        "input; the gate is causal without it)")
    window_seconds: float = option(4.0, "length of the training windows")
    noise_share: float = option(0.4, "share of windows with no voice: noise or babble alone, truth 0")
    babble_share: float = option(0.5, "share of those whose noise is babble (3-8 other clips at once)")
    one_voice_babble: float = option(0.5, "share of the babble windows made of one voice's clips only (talkers who "
                                          "sound alike)")
    babble_speeds: float = option(0.0, "each babble talker plays at its own speed, up to this fraction off "
                                       "(0.15: 0.85-1.15×; pitch and formants move: more people than recorded)")
    ema_decay: float = option(0.995, "decay of the moving average of the weights that is scored and kept (0: the "
                                     "weights as trained)")
    speech_held_out: float = option(0.0, "with --speech: leave out the recordings `talker synth --held-out` of this "
                                         "fraction holds out (the fraction your held-out sets were made with)")
    held_out: float = 0.1


def add_options(parser: argparse.ArgumentParser, config: type) -> None:
    """A ``--name`` option for every field of ``config`` that has a help text, its default the
    field's: ``--no-name`` for a field that is True by default, ``--name`` for one that is False."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if not f.metadata.get("help"):
            continue
        name = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            parser.add_argument(f"--no-{name[2:]}" if f.default else name, dest=f.name,
                                action="store_false" if f.default else "store_true", help=f.metadata["help"])
            continue
        kind = f.metadata.get("parse") or next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],)
                                               if t is not type(None))
        shown = "" if f.default is None else f" (default {','.join(map(str, f.default)) if isinstance(f.default, tuple) else f.default})"
        parser.add_argument(name, type=kind, default=f.default, choices=f.metadata.get("choices"),
                            help=f.metadata["help"] + shown)


def from_options(config: type, args: argparse.Namespace):
    """The config that ``args`` (parsed with :func:`add_options`) describe."""
    return config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config) if f.metadata.get("help")})
