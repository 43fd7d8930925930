"""Speaker checkpoints out of training runs, for ``talker export`` and ``talker push``.

``export_speaker`` gathers a DAE run, a speech2latent run and the optional stages (a distilled
decoder, a refiner, a streaming speech2latent, a voice gate) into one ``save_pretrained`` folder
with ``speaker.json`` (what the speaker is, who consented, how it was trained) and a model card
made from ``model_card.md``; the ``add_*`` functions (a streaming speech2latent, a refiner, a
live refiner, a light decoder, a voice gate) add a stage to an existing folder; ``push_speaker``
uploads a checked folder to the Hub.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import CheckpointError
from ..hub import REPO_ID, check_checkpoint, read_speaker, stored_dtype, write_speaker

CARD_TEMPLATE = Path(__file__).resolve().parents[2] / "model_card.md"


def write_model_card(folder: Path, *, speaker: dict, repo_id: str | None = None, template: Path | None = None) -> None:
    """README.md with Hub metadata (license, library, tags) from ``model_card.md``."""
    from huggingface_hub import ModelCard, ModelCardData

    template = template or CARD_TEMPLATE
    if not template.is_file():
        raise CheckpointError(f"model card template not found: {template}")
    figures = speaker.get("training", {})
    dae, s2l = figures.get("dae", {}), figures.get("s2l", {})
    data = ModelCardData(license="mit", library_name="diffusers", pipeline_tag="image-to-video",
                         tags=["talking-face", "talking-head", "speech-driven", "dae-talker", "diffusion-autoencoder",
                               "synthetic-media"])
    card = ModelCard.from_template(
        data, template_path=str(template), speaker_name=speaker["name"], consent=speaker["consent"],
        repo_id=repo_id or f"<owner>/{speaker['name']}", resolution=speaker.get("resolution", "?"),
        source=speaker.get("source", "not given"), minutes=f"{speaker.get('minutes', 0):.1f}",
        audio_frontend=speaker.get("audio_frontend", "mel") + (
            ", with voice activity (Silero VAD's P(speech), MIT) as one more input" if speaker.get("voice_activity") else "") + (
            "; where nobody speaks, each frame's z_sem is moved along the learned mouth axis toward a shut mouth"
            + (f", and where someone does, its mouth opening is scaled by {speaker['mouth_gain']:.2f} (as much spread as "
               "the held-out openings)" if speaker.get("mouth_gain", 1.0) != 1.0 else "")
            if speaker.get("shuts_silent_mouth") else ""),
        dae_steps=dae.get("steps", "?"),
        dae_batch=dae.get("batch_size", "?"), dae_loss=_fmt(dae.get("loss_avg")),
        s2l_steps=f"{s2l.get('steps', '?')} steps" + (" (continued from earlier weights)" if s2l.get("init_from") else ""),
        s2l_kept=s2l.get("best_step", s2l.get("steps", "?")),
        heldout_latent_mse=_fmt(s2l.get("heldout_latent_mse")), heldout_pose_mae=s2l.get("heldout_pose_mae_deg", "n/a"),
        distilled=_distilled_line(figures.get("distill")),
        output_resolution=speaker.get("output_resolution", speaker.get("resolution", "?")),
        refined_by=" refined" if figures.get("refiner") else "",
        refiner=_refiner_line(figures.get("refiner")),
        live=_live_line(speaker.get("live"), figures.get("live_s2l")),
        light=_light_line(figures.get("light_decoder")),
        live_refiner=_live_refiner_line(figures.get("live_refiner")),
        voice_gate=_gate_line(figures.get("voice_gate")),
        emotion=_emotion_line(speaker.get("emotion")),
        speech=_speech_lines(speaker.get("speech")),
    )
    card.save(folder / "README.md")


def _speech_lines(rows: list[dict] | None) -> str:
    if not rows:
        return "- not recorded"
    return "\n".join(f"- {r['voice']}: {r['minutes']:.1f} min ({r['credit']})" for r in rows)


def _refiner_line(r: dict | None) -> str:
    if not r:
        return "none (frames are the decoder's)"
    lo, hi = r.get("resolution", ["?", "?"])
    f = lambda k: f"{r[k]:.2f}" if isinstance(r.get(k), (int, float)) else "n/a"  # noqa: E731
    decoder = f"{r['decoder']} decoder" if r.get("decoder") else "decoder"
    how = (" (continued from earlier weights)" if r.get("init_from") else "") + (
        f", with a patch discriminator (adversarial weight {r['adv_weight']:g})" if r.get("adv_weight") else "")
    return (f"{lo}² → {hi}², {r.get('steps', '?')} steps{how} on {r.get('train_frames', '?')} frames the {decoder} made "
            f"of the speaker's own; held-out PSNR on the decoder's renderings {f('psnr_refined')} dB (bicubic "
            f"{f('psnr_bicubic')} dB), sharpness {f('sharpness_refined')}× the truth's (bicubic {f('sharpness_bicubic')}×)"
            + (f"; on the truth downscaled and blurred {f('psnr_refined_aligned')} dB (bicubic {f('psnr_bicubic_aligned')} dB)"
               if "psnr_refined_aligned" in r else ""))


def _live_refiner_line(r: dict | None) -> str:
    if r is None:
        return "none (live input's frames go through the refiner)"
    if not r:
        return "live input's (no training record)"
    return f"live input's, narrower ({r.get('channels', '?')} channels, {r.get('num_blocks', '?')} blocks): " + _refiner_line(r)


def _live_line(live: dict | None, run: dict | None) -> str:
    if not live:
        return "none (`stream(..., live=True)` needs one)"
    run = run or {}
    return (f"a streaming speech2latent for `stream(..., live=True)`: chunks of {live['chunk_frames']} frames, "
            f"at most {live['lookahead_ms']} ms of audio after a frame heard; {run.get('steps', '?')} steps"
            + (f" (continued from the weights in `{run['init_from']}`)" if run.get("init_from") else "")
            + (f", step {run['best_step']} kept (held-out latent MSE {_fmt(run.get('heldout_latent_mse'))}, mouth "
               f"{_fmt(run.get('heldout_mouth_mse'))})" if run.get("best_step") else ""))


def _light_line(d: dict | None) -> str:
    if not d:
        return "none (live input renders with the distilled decoder)"
    psnr = d.get("val_psnr", {}).get("student", {}).get("1")
    return (f"a decoder {d.get('student_channels', '?')} channels wide distilled from the distilled decoder's "
            f"{d.get('teacher_steps', '?')}-step frames ({d.get('steps', '?')} steps on {d.get('pairs', '?')} of "
            f"them; held-out PSNR against them at one step: {psnr if psnr is not None else 'n/a'} dB); live input "
            "renders with it")


def _gate_line(g: dict | None) -> str:
    if not g:
        return "none (the mouth follows any speech that voice activity hears, babble included)"
    best = g.get("best", {})
    pct = lambda k: f"{best[k]:.0%}" if isinstance(best.get(k), (int, float)) else "n/a"  # noqa: E731
    return (f"P(a foreground voice speaks) per frame scales the mouth opening; {g.get('steps', '?')} steps, step "
            f"{best.get('step', '?')} kept: on held-out clips it passes {pct('speech_passed')} of speaking frames "
            f"({pct('speech_in_babble_passed')} with babble at 10 dB SNR), shuts {pct('pauses_shut')} of pause frames "
            f"and {pct('babble_alone_shut')} of frames of babble alone"
            + (f" ({pct('one_voice_babble_shut')} of babble of one voice)" if "one_voice_babble_shut" in best else "")
            + _gate_speech(g.get("speech")))


def _gate_speech(rows: list[dict] | None) -> str:
    if not rows:
        return ""
    credits = sorted({r["credit"] for r in rows})
    return (f"; trained on {sum(r['minutes'] for r in rows):.1f} min of speech in {len(rows)} voices "
            f"({'; '.join(credits)})")


def _emotion_line(e: dict | None) -> str:
    if not e:
        return "through speech2latent's emotion input"
    if e.get("method") == "warp":
        held = e.get("heldout_error")
        return (f"an expression warp of the decoder's frames (`expression/`: a flow and a colour change per emotion, "
                f"times its intensity; {e['parameters']:,} parameters), trained on {e['frames']} emotional frames of "
                f"{e['takes']} lines recorded neutral and with emotion, aligned by their sound"
                + (f", the move learned against the takes' own {e['sharp_side']}² crops" if e.get("sharp_side") else "")
                + "; neutral frames pass unchanged and speech2latent is given no emotion (`talker add-emotion`"
                + (f"; held-out pairs' error {held['neutral']:.4f} neutral, {held['warped']:.4f} warped"
                   + (f" at {e['sharp_side']}²" if e.get("sharp_side") else "") if held else "")
                + ")")
    if e.get("method") == "input":
        held = [f"{name} {row['heldout_error']['without']:.4f} without it, "
                f"{row['heldout_error']['with_emotion_input']:.4f} with it"
                for name, row in e["decoders"].items() if row.get("heldout_error")]
        return (f"an input of the decoders ({', '.join(e['decoders'])}) as well as of speech2latent, trained on "
                f"{e['frames']} frames of {e['clips']} training clips with the rest of the decoders frozen, so "
                f"neutral renders as without it (`talker add-emotion`"
                + (f"; held-out frames' error: {'; '.join(held)}" if held else "") + ")")
    if e.get("method") == "decoder":
        held = e.get("heldout_error")
        knots = e.get("knots", 1)
        shape = (f"each emotion's offsets in z_sem at {knots} intensities (straight lines between them)"
                 if knots > 1 else "intensity × each emotion's direction in z_sem")
        return (f"{shape}, learned through the speaker's decoder on {e['frames']} frames of {e['clips']} training "
                f"clips" + ("; the mouth opening that speech2latent reads out is left to speech" if e.get("hold_mouth") else "")
                + " (`talker add-emotion`"
                + (f"; held-out frames' error {held['without']:.4f} without the directions, "
                   f"{held['with_directions']:.4f} with them" if held else "") + ")")
    return (f"intensity × each emotion's direction in z_sem, fitted on {e['frames']} frames of {e['clips']} training "
            f"clips (`talker add-emotion`; {e['variance_explained']:.0%} of the latents' variance explained"
            + (f" with {', '.join(e['covariates'])} as covariates" if e.get("covariates") else "") + ")")


def _distilled_line(d: dict | None) -> str:
    if not d:
        return "none (frames are rendered by the DDIM decoder)"
    psnr = d.get("val_psnr", {}).get("student") or d.get("heldout_psnr_vs_teacher_db") or {}
    by_steps = ", ".join(f"{v} dB at {k}" for k, v in psnr.items())
    if d.get("val_target") == "frames":  # trained on the person's own frames only
        line = (f"{d.get('steps', '?')} steps on the speaker's own frames (loss weighted where they move, "
                f"w = {d.get('motion_weight', 0):g}); held-out PSNR against the speaker's frames: {by_steps or 'n/a'}")
        return f"{_distilled_line(d['continued_from'])}; then {line}" if d.get("continued_from") else line
    return (f"trained {d.get('steps', '?')} steps on the {d.get('teacher_steps', '?')}-step DDIM decoder's frames; "
            f"held-out PSNR against them: {by_steps or 'n/a'}")


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


def clip_voices(index: dict) -> dict[str, dict]:
    """Per clip id of a dataset, the voice its speech came from and its credit ({voice, credit}):
    read from the ``meta.json`` that ``talker synth`` wrote next to each source video (videos of
    other origins are named by their folder)."""
    metas: dict[Path, dict] = {}
    out: dict[str, dict] = {}
    for clip in index["clips"]:
        src = Path(clip["source"])
        root = src.parent.parent
        if root not in metas:
            path = root / "meta.json"
            metas[root] = json.loads(path.read_text()) if src.parent.name == "videos" and path.is_file() else {}
        meta = metas[root]
        entry = next((c for c in meta.get("clips", []) if c.get("id") == src.stem), None)
        voice = entry["voice"] if entry else src.parent.name or str(src)
        if entry and voice.startswith("recorded"):
            credit = meta.get("speech_credit") or "recorded speech (no credit given)"
        elif entry:
            credit = "espeak-ng text-to-speech"
        else:
            credit = "the speaker's own video"
        out[clip["id"]] = {"voice": voice, "credit": credit}
    return out


def speech_sources(index: dict) -> list[dict]:
    """The voices a dataset's speech came from, with minutes and credit (:func:`clip_voices`)."""
    voices: dict[str, dict] = {}
    sources = clip_voices(index)
    for clip in index["clips"]:
        source = sources[clip["id"]]
        row = voices.setdefault(source["voice"], {**source, "minutes": 0.0})
        row["minutes"] = round(row["minutes"] + clip["frames"] / index["fps"] / 60, 2)
    return sorted(voices.values(), key=lambda r: -r["minutes"])


def export_speaker(dae_run: str | os.PathLike, s2l_run: str | os.PathLike, data_dir: str | os.PathLike,
                   out: str | os.PathLike, *, speaker_name: str, consent: str, source: str | None = None,
                   dtype: str = "float32", distilled_run: str | os.PathLike | None = None,
                   refiner_run: str | os.PathLike | None = None,
                   live_s2l_run: str | os.PathLike | None = None,
                   gate_run: str | os.PathLike | None = None) -> Path:
    """A trained DAE and speech2latent (and optionally the decoder distilled from that DAE,
    ``talker train distill``, a refiner, ``talker train refiner``, and a streaming speech2latent
    for live input, ``talker train s2l --chunk-frames``, and a voice gate, ``talker train gate``)
    → a ``save_pretrained`` speaker folder
    with speaker.json and a model card. ``dtype="float16"`` halves the files;
    loading casts back to float32."""
    import numpy as np

    from ..models import Speech2Latent
    from ..pipelines import DAETalkerPipeline
    from .dae import load_dae
    from .data import load_dataset

    if not consent or not consent.strip():
        raise CheckpointError("a consent statement is required (--consent): who agreed to this model, and to what")
    if not speaker_name or not re.match(r"^[\w.\-]+$", speaker_name):
        raise CheckpointError(f"--speaker-name must be letters, digits, '.', '-' or '_'; got {speaker_name!r}")
    encoder, unet, scheduler = load_dae(dae_run)
    s2l_path = Path(s2l_run) / "speech_to_latent"
    if not s2l_path.is_dir():
        raise CheckpointError(f"{s2l_run} has no trained speech2latent ({s2l_path}); run `talker train s2l` first")
    s2l = Speech2Latent.from_pretrained(s2l_path, use_safetensors=True)
    audio_encoder = feature_extractor = None
    s2l_cfg = json.loads((Path(s2l_run) / "train_config.json").read_text())
    if s2l.config.audio_frontend == "wav2vec2":
        from ..frontends import load_audio_encoder

        audio_encoder, feature_extractor = load_audio_encoder(s2l_cfg["wav2vec2"])
    distilled_unet = None
    if distilled_run is not None:
        from ..models import DAEDecoderUNet

        path = Path(distilled_run) / "distilled_unet"
        if not path.is_dir():
            raise CheckpointError(f"{distilled_run} has no distilled decoder ({path}); run `talker train distill` first")
        distilled_unet = DAEDecoderUNet.from_pretrained(path, use_safetensors=True)
        if distilled_unet.config.prediction_type != "sample" or distilled_unet.config.sample_size != unet.config.sample_size:
            raise CheckpointError(f"{path} is not a distilled decoder of this {unet.config.sample_size}px DAE")
    refiner = None if refiner_run is None else load_refiner(refiner_run, unet.config.sample_size)
    live = None if live_s2l_run is None else load_live_s2l(live_s2l_run, s2l)
    gate = None if gate_run is None else load_voice_gate(gate_run)
    index, clips = load_dataset(data_dir)
    longest = max(clips, key=lambda c: c.n_frames)
    figures = {}
    stages = (("dae", dae_run), ("s2l", s2l_run)) + ((("distill", distilled_run),) if distilled_run else ())
    stages += (("refiner", refiner_run),) if refiner_run else ()
    stages += (("live_s2l", live_s2l_run),) if live_s2l_run else ()
    stages += (("voice_gate", gate_run),) if gate_run else ()
    for stage, run in stages:
        f, card = Path(run) / "figures.json", Path(run) / "speaker.json"
        if f.is_file():
            figures[stage] = json.loads(f.read_text())
        elif card.is_file():  # a speaker checkpoint given as the DAE / distilled decoder: keep its record
            figures[stage] = json.loads(card.read_text()).get("training", {}).get(stage, {})
        else:
            figures[stage] = {}
    # a run continued from a shipped decoder: its record too (a speaker's record already holds it)
    earlier = None if "continued_from" in figures.get("distill", {}) else figures.get("distill", {}).get("init_student")
    if earlier and (Path(earlier) / "speaker.json").is_file():
        figures["distill"]["continued_from"] = json.loads((Path(earlier) / "speaker.json").read_text())["training"].get("distill", {})
    elif earlier and (Path(earlier) / "figures.json").is_file():
        figures["distill"]["continued_from"] = json.loads((Path(earlier) / "figures.json").read_text())
    dae_cfg = Path(dae_run) / "train_config.json"
    if dae_cfg.is_file():
        figures["dae"]["batch_size"] = json.loads(dae_cfg.read_text()).get("batch_size")
    speaker = {
        "name": speaker_name,
        "consent": consent.strip(),
        "source": source or ", ".join(sorted({Path(c["source"]).parent.name or c["source"] for c in index["clips"]})),
        "resolution": unet.config.sample_size,
        "output_resolution": refiner.out_resolution if refiner is not None else unet.config.sample_size,
        "minutes": sum(c.n_frames for c in clips) / index["fps"] / 60,
        "audio_frontend": s2l.config.audio_frontend,
        "voice_activity": bool(s2l.config.get("voice_activity", False)),
        "shuts_silent_mouth": bool(s2l.config.get("voice_activity", False) and s2l.config.get("mouth_readout", False)),
        "mouth_gain": float(s2l.config.get("mouth_gain", 1.0)),
        "training": figures,
        "speech": speech_sources(index),
        "reference_pose": np.round(longest.pose, 2).tolist(),
    }
    if index.get("square"):
        speaker["square"] = index["square"]  # `talker prepare --crop-from` the speaker frames new clips alike
    if live is not None:
        speaker["live"] = live_record(live)
    pipe = DAETalkerPipeline(unet=unet, scheduler=scheduler, speech_to_latent=s2l, encoder=encoder,
                             audio_encoder=audio_encoder, feature_extractor=feature_extractor,
                             distilled_unet=distilled_unet, refiner=refiner, live_speech_to_latent=live,
                             voice_gate=gate)
    pipe.speaker = speaker
    if dtype != "float32":
        import torch

        pipe = pipe.to(getattr(torch, dtype))
        pipe.speaker = speaker
    out = Path(out)
    pipe.save_pretrained(out)
    write_model_card(out, speaker=speaker)
    return out


def load_live_s2l(run: str | os.PathLike, s2l):
    """The streaming speech2latent of a ``talker train s2l --chunk-frames`` run, checked against
    the speaker's own ``s2l`` (same front end, latents and statistics' sizes)."""
    from ..models import Speech2Latent

    path = Path(run) / "speech_to_latent"
    if not path.is_dir():
        raise CheckpointError(f"{run} has no trained speech2latent ({path}); run `talker train s2l --chunk-frames C`")
    live = Speech2Latent.from_pretrained(path, use_safetensors=True)
    if not live.config.get("chunk_frames", 0):
        raise CheckpointError(f"{path} is not a streaming speech2latent; train one with `talker train s2l --chunk-frames C`")
    for key in ("audio_frontend", "feature_dim", "latent_dim", "fps", "voice_activity"):
        if live.config.get(key) != s2l.config.get(key):
            raise CheckpointError(f"{path} has {key} {live.config.get(key)!r}; the speaker's speech2latent has "
                                  f"{s2l.config.get(key)!r}")
    return live


def live_record(live) -> dict:
    """What speaker.json says of a streaming speech2latent."""
    c = live.config.chunk_frames
    return {"chunk_frames": c, "lookahead_ms": live.lookahead_ms}


def add_live_s2l(folder: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Add (or replace) the streaming speech2latent of a speaker folder (``talker export
    --add-live``): ``live_speech_to_latent/`` stored in the precision of its other weights, the
    component in model_index.json, its training record in speaker.json, and the model card."""
    import torch

    from ..pipelines import DAETalkerPipeline

    folder = Path(folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    live = load_live_s2l(run, pipe.speech_to_latent)
    torch.nn.Module.to(live, stored_dtype(folder / "speech_to_latent"))  # (ModelMixin.to warns here)
    return add_component(folder, "live_speech_to_latent", live, "talker.models.speech2latent", run, "live_s2l",
                         live=live_record(live))


def load_refiner(run: str | os.PathLike, resolution: int):
    """The refiner of a ``talker train refiner`` run (``RUN/refiner``, or a refiner folder), checked
    to refine ``resolution``-pixel frames."""
    from ..models import Refiner

    path = next((d for d in (Path(run) / "refiner", Path(run)) if (d / "config.json").is_file()), None)
    if path is None:
        raise CheckpointError(f"{run} has no refiner (refiner/); run `talker train refiner` first")
    refiner = Refiner.from_pretrained(path, use_safetensors=True)
    if refiner.config.in_resolution != resolution:
        raise CheckpointError(f"{path} refines {refiner.config.in_resolution}px frames, not this "
                              f"{resolution}px decoder's")
    return refiner


def add_refiner(folder: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Add (or replace) the refiner of a speaker folder (``talker add-refiner``): ``refiner/``
    stored in the precision of its decoder's weights, the component in model_index.json, its
    training record in speaker.json, ``output_resolution``, and the model card."""
    import torch

    folder = Path(folder)
    check_checkpoint(folder, ("unet", "scheduler", "speech_to_latent"))
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    refiner = load_refiner(run, unet_config["sample_size"])
    torch.nn.Module.to(refiner, stored_dtype(folder / "unet"))  # (ModelMixin.to warns here)
    return add_component(folder, "refiner", refiner, "talker.models.refiner", run, "refiner",
                         output_resolution=refiner.out_resolution)


def add_live_refiner(folder: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Add (or replace) the live refiner of a speaker folder (``talker add-live-refiner``): a
    ``talker train refiner`` run's network, narrower than the speaker's refiner so that live input
    keeps up where the refiner does not, checked to render the same size from the same frames,
    stored as ``live_refiner/`` in the precision of the decoder's weights."""
    import torch

    folder = Path(folder)
    check_checkpoint(folder, ("unet", "scheduler", "speech_to_latent", "refiner"))
    reference = json.loads((folder / "refiner" / "config.json").read_text())
    live = load_refiner(run, reference["in_resolution"])
    if live.config.scale != reference["scale"]:
        raise CheckpointError(f"{run}: its refiner upscales ×{live.config.scale}; this speaker's refiner "
                              f"×{reference['scale']} (a live refiner renders the same size)")
    torch.nn.Module.to(live, stored_dtype(folder / "unet"))  # (ModelMixin.to warns here)
    return add_component(folder, "live_refiner", live, "talker.models.refiner", run, "live_refiner")


def add_light_decoder(folder: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Add (or replace) the light decoder of a speaker folder (``talker add-light``): a ``talker
    train distill --teacher distilled --student-channels C`` run's student as ``light_unet/``,
    checked to render this speaker's frames from its latents (and emotions, where its distilled
    decoder takes them), stored in the precision of its decoder's weights."""
    import torch

    from .distill import load_student

    folder = Path(folder)
    check_checkpoint(folder, ("unet", "scheduler", "speech_to_latent", "distilled_unet"))
    light = load_student(run)
    reference = json.loads((folder / "distilled_unet" / "config.json").read_text())
    for key in ("sample_size", "z_dim", "in_channels", "emotion_dim"):
        if light.config.get(key) != reference.get(key):
            raise CheckpointError(f"{run}: its decoder has {key} {light.config.get(key)!r}; this speaker's distilled "
                                  f"decoder has {reference.get(key)!r}")
    torch.nn.Module.to(light, stored_dtype(folder / "unet"))  # (ModelMixin.to warns here)
    return add_component(folder, "light_unet", light, "talker.models.unet", run, "light_decoder")


def store_component(folder: Path, name: str, model, module: str) -> None:
    """Write ``model`` as component ``name`` of a speaker folder: its folder and its line in
    model_index.json."""
    model.save_pretrained(folder / name)
    index = json.loads((folder / "model_index.json").read_text())
    index[name] = [module, type(model).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def add_component(folder: Path, name: str, model, module: str, run: str | os.PathLike, stage: str,
                  **speaker_fields) -> Path:
    """Store ``model`` as component ``name`` of a speaker folder (:func:`store_component`),
    ``run``'s figures as training stage ``stage`` of speaker.json with ``speaker_fields``, and the
    model card again."""
    store_component(folder, name, model, module)
    speaker = read_speaker(folder)
    figures = Path(run) / "figures.json"
    speaker.setdefault("training", {})[stage] = json.loads(figures.read_text()) if figures.is_file() else {}
    speaker.update(speaker_fields)
    write_speaker(folder, speaker)
    write_model_card(folder, speaker=speaker)
    return folder


def load_voice_gate(run: str | os.PathLike):
    """The voice gate a ``talker train gate`` run kept (``RUN/voice_gate``)."""
    from ..models import VoiceGate

    path = Path(run) / "voice_gate"
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{run} has no trained voice gate ({path}); run `talker train gate` first")
    return VoiceGate.from_pretrained(path, use_safetensors=True)


def add_voice_gate(folder: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Add (or replace) the voice gate of a speaker folder (``talker add-gate``): ``voice_gate/``
    (float32: it is small), the component in model_index.json, its training record in
    speaker.json, and the model card."""
    folder = Path(folder)
    check_checkpoint(folder, ("unet", "scheduler", "speech_to_latent"))
    return add_component(folder, "voice_gate", load_voice_gate(run), "talker.models.voice_gate", run, "voice_gate")


def check_pushable(folder: str | os.PathLike) -> dict:
    """Refuse a checkpoint without a consent statement or a valid model card; returns speaker.json."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    check_checkpoint(folder, ("unet", "scheduler", "speech_to_latent"))
    speaker = read_speaker(folder)
    if not str(speaker.get("consent", "")).strip():
        raise CheckpointError(f"{folder}: speaker.json has no consent statement; it will not be pushed")
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise CheckpointError(f"{folder}: no model card (README.md); run `talker export` to write one")
    card = ModelCard.load(card_path)
    if not card.data.license or not card.data.library_name:
        raise CheckpointError(f"{card_path}: the model card's metadata needs license and library_name")
    return speaker


def push_speaker(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the model repo (if needed) and upload the checkpoint folder; returns the repo URL."""
    from huggingface_hub import HfApi

    check_pushable(folder)
    if not REPO_ID.match(repo_id):
        raise CheckpointError(f"--repo-id must be OWNER/NAME; got {repo_id!r}")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload DAE-Talker speaker")
    return str(url)
