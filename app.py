"""talker: the Gradio web demo (a Hugging Face Space entry point).

    python app.py          # serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Settings (environment, e.g. the Space's variables):
    TALKER_MODEL        the speaker shown first: a checkpoint folder or Hub repo id
                        (default: the bundled speaker in checkpoints/)
    TALKER_MODELS       more speakers to offer, comma-separated folders or repo ids
    TALKER_MAX_SECONDS  longest audio accepted (default 60)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import spaces
import torch

from talker import DAETalkerPipeline, TalkerError
from talker.audio import SAMPLE_RATE, load_audio
from talker.defaults import DEFAULT_DISTILLED_STEPS, DEFAULT_STEPS
from talker.models import EMOTIONS
from talker.pose import load_pose_file

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.wav"))
MAX_SECONDS = float(os.environ.get("TALKER_MAX_SECONDS", "60"))
SEGMENT_FRAMES = 25  # one second of video per streamed segment
# Gradio's streaming video output needs the ffmpeg and ffprobe programs (a Space gets them from
# packages.txt); without them the demo offers the whole-video button only
CAN_STREAM = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
POSE_MODES = {"Predicted from speech": "predicted", "Still (speaker's average pose)": "static",
              "Reference (pose file or the speaker's own)": "reference"}
DECODER_CHOICES = {"Distilled (fast)": "distilled", "DDIM (paper)": "ddim"}


def default_models() -> list[str]:
    bundled = sorted(str(p.parent) for p in (ROOT / "checkpoints").glob("*/model_index.json"))
    first = os.environ.get("TALKER_MODEL") or (bundled[0] if bundled else None)
    extra = [m.strip() for m in os.environ.get("TALKER_MODELS", "").split(",") if m.strip()]
    models = [m for m in dict.fromkeys([first, *extra]) if m]
    if not models:
        raise SystemExit("no speaker: set TALKER_MODEL to a checkpoint folder or Hub repo id")
    return models


def load_speakers(models: list[str]) -> dict[str, DAETalkerPipeline]:
    """Every speaker loaded once, at start-up, on the GPU when there is one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipes = {}
    for name in models:
        # float16 on a GPU; float32 on a CPU, where float16 arithmetic is several times slower
        pipe = DAETalkerPipeline.from_pretrained(name, dtype=torch.float16 if device == "cuda" else torch.float32).to(device)
        pipe.set_progress_bar_config(desc="denoising frames")
        pipes[pipe.speaker.get("name") or Path(name).name] = pipe
    return pipes


def build_demo(pipes: dict[str, DAETalkerPipeline]) -> gr.Blocks:
    names = list(pipes)

    def request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder=None):
        """The form → (pipeline, keyword arguments), or a readable gr.Error."""
        if not audio:
            raise gr.Error("Please upload or record some speech first.")
        pipe = pipes.get(speaker or names[0])
        if pipe is None:
            raise gr.Error(f"Unknown speaker {speaker!r}; available: {', '.join(names)}")
        mode = POSE_MODES.get(pose_mode, pose_mode)
        pose = load_pose_file(pose_file) if (pose_file and mode != "predicted") else None
        if pose is not None and mode == "static":
            pose = pose[0]
        emotion = dict(zip(EMOTIONS, (happy, sad, angry, surprised), strict=True))
        return pipe, dict(num_inference_steps=int(steps), decoder=DECODER_CHOICES.get(decoder, decoder) or None,
                          pose_mode=mode, pose=pose,
                          emotion={k: float(v) for k, v in emotion.items() if k in pipe.emotion_names},
                          generator=torch.Generator().manual_seed(int(seed)))

    @spaces.GPU(duration=120)
    def generate(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder=None,
                 progress=gr.Progress(track_tqdm=True)):
        """Speech → talking-face mp4 (H.264 + AAC). Errors come back as readable messages."""
        try:
            pipe, kwargs = request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder)
            out = Path(tempfile.mkdtemp(prefix="talker-")) / "talking-face.mp4"
            pipe.generate_video(audio, out, max_duration=MAX_SECONDS, **kwargs)
        except TalkerError as e:
            raise gr.Error(str(e)) from None
        return str(out)

    @spaces.GPU(duration=120)
    def stream(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder=None):
        """Speech → one-second MPEG-TS segments (with their audio) to the live player as frames
        are made, then the whole mp4 for download."""
        try:
            pipe, kwargs = request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder)
            wave = load_audio(audio, max_duration=MAX_SECONDS, fps=pipe.fps)
            folder = Path(tempfile.mkdtemp(prefix="talker-"))
            spf = SAMPLE_RATE // pipe.fps
            chunks = (wave[i : i + SAMPLE_RATE // 2] for i in range(0, len(wave), SAMPLE_RATE // 2))
            frames, done = [], 0
            with pipe.video_writer(folder / "talking-face.mp4", audio=wave, sampling_rate=SAMPLE_RATE) as whole:
                for frame in pipe.stream(chunks, SAMPLE_RATE, **kwargs):
                    frames.append(frame)
                    whole.write(frame)
                    if len(frames) == SEGMENT_FRAMES:
                        yield write_segment(pipe, folder, done, frames, wave, spf), None
                        done, frames = done + len(frames), []
                if frames:
                    yield write_segment(pipe, folder, done, frames, wave, spf), None
        except TalkerError as e:
            raise gr.Error(str(e)) from None
        yield gr.skip(), str(folder / "talking-face.mp4")

    first = pipes[names[0]]
    consent = first.speaker.get("consent", "(this checkpoint has no consent statement)")
    with gr.Blocks(title="talker: speech-driven talking faces") as demo:
        gr.Markdown(
            "# talker: speech-driven talking faces\n"
            "Upload or record speech; a diffusion autoencoder driven by a Conformer *speech2latent* network "
            "(after DAE-Talker) turns it into a video of the speaker talking. **Every video is synthetic.**"
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
                speaker = gr.Dropdown(names, value=names[0], label="Speaker", visible=len(names) > 1)
                pose_mode = gr.Radio(list(POSE_MODES), value=next(iter(POSE_MODES)), label="Head motion")
                pose_file = gr.File(label="Pose file (.csv yaw,pitch,roll or .npy, degrees) for reference/still",
                                    file_types=[".csv", ".npy"], type="filepath")
                fast = first.distilled_unet is not None
                decoder = gr.Radio(list(DECODER_CHOICES), value=next(iter(DECODER_CHOICES)) if fast else "DDIM (paper)",
                                   label="Decoder", visible=fast)
                steps = gr.Slider(1, 100, value=first.default_steps(), step=1,
                                  label=f"Denoising steps (distilled: {DEFAULT_DISTILLED_STEPS}, up to 8; "
                                        f"DDIM: {DEFAULT_STEPS}, the paper used 100)")
                decoder.change(lambda d: first.default_steps(DECODER_CHOICES.get(d)), decoder, steps, queue=False,
                               api_visibility="private")
                with gr.Accordion("Emotion", open=False):
                    sliders = [gr.Slider(0, 1, value=0, step=0.05, label=name.capitalize()) for name in EMOTIONS]
                seed = gr.Number(value=0, precision=0, label="Seed (the fixed noise image)")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary")
                    stream_button = gr.Button("Stream (watch while it is made)", visible=CAN_STREAM)
            with gr.Column():
                live = gr.Video(label="Live", streaming=True, autoplay=True, visible=False)
                video = gr.Video(label="Talking face", format="mp4", buttons=["download"])
                with gr.Accordion("About", open=False):
                    size = first.output_resolution()
                    gr.Markdown(
                        f"**Speaker:** {first.speaker.get('name', names[0])} · {size}×{size} px"
                        + (f" (the decoder's {first.resolution}×{first.resolution} frames through the speaker's refiner)"
                           if size != first.resolution else "")
                        + f", 25 fps.\n\n**Consent:** {consent}\n\n"
                        "The model: a semantic encoder and a DDIM decoder (DiffAE) learnt from this speaker's video, "
                        "and a decoder distilled from it that renders the same frames in a few steps; "
                        "speech2latent predicts one latent and one head pose per frame from the audio; all frames "
                        f"are decoded from one shared noise image. Audio up to {MAX_SECONDS:g} s."
                    )
        inputs = [audio, pose_mode, pose_file, steps, *sliders, seed, speaker, decoder]
        button.click(lambda: gr.update(visible=False), None, live, queue=False, api_visibility="private").then(
            generate, inputs, video, api_name="generate", concurrency_limit=1, concurrency_id="gpu")
        stream_button.click(lambda: (gr.update(visible=True), None), None, [live, video], queue=False, api_visibility="private").then(
            stream, inputs, [live, video], api_name="stream", concurrency_limit=1, concurrency_id="gpu")
        if EXAMPLES:
            gr.Examples([[str(p)] for p in EXAMPLES], inputs=[audio], label="Example speech")
    demo.queue(max_size=16)
    return demo


def write_segment(pipe, folder: Path, start: int, frames: list, wave, spf: int) -> str:
    """Frames ``start ..`` with their stretch of audio as one watermarked MPEG-TS segment."""
    import numpy as np

    path = folder / f"segment-{start:06d}.ts"
    audio = wave[start * spf : (start + len(frames)) * spf]
    with pipe.video_writer(path, audio=audio, sampling_rate=SAMPLE_RATE) as w:
        w.write(np.stack(frames))
    return str(path)


if __name__ == "__main__":
    demo = build_demo(load_speakers(default_models()))
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
