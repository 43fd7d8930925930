"""talker: the Gradio web demo (a Hugging Face Space entry point).

    python app.py          # serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Settings (environment, e.g. the Space's variables):
    TALKER_MODEL        the speaker shown first: a checkpoint folder or Hub repo id
                        (default: the bundled speaker in checkpoints/)
    TALKER_MODELS       more speakers to offer, comma-separated folders or repo ids
    TALKER_MAX_SECONDS  longest audio accepted (default 60)
    TALKER_QUEUE_SIZE   requests that may wait for the GPU; more are told the queue is full,
                        to retry (default 16)
    TALKER_KEEP_MINUTES how long Gradio keeps uploads and finished videos for the browser to play
                        and download (default 60)
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import spaces
import torch

from talker import DAETalkerPipeline, TalkerError
from talker.errors import InputError
from talker.audio import SAMPLE_RATE, load_audio
from talker.defaults import DEFAULT_DISTILLED_STEPS, DEFAULT_STEPS, EMOTIONS, LIVE_BLOCK_S, MAX_DISTILLED_STEPS
from talker.pose import load_pose_file

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.wav"))
MAX_SECONDS = float(os.environ.get("TALKER_MAX_SECONDS", "60"))
QUEUE_SIZE = int(os.environ.get("TALKER_QUEUE_SIZE", "16"))
KEEP_MINUTES = float(os.environ.get("TALKER_KEEP_MINUTES", "60"))
MAX_DDIM_STEPS = 100  # the slider's top for the DDIM decoder: the paper's count
SEGMENT_FRAMES = 25  # one second of video per streamed segment
# Gradio's streaming video output needs the ffmpeg and ffprobe programs (a Space gets them from
# packages.txt); without them the demo offers the whole-video button only
CAN_STREAM = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
POSE_MODES = {"Predicted from speech": "predicted", "Still (speaker's average pose)": "static",
              "Reference (pose file or the speaker's own)": "reference"}
DEFAULT_POSE_MODE = next(iter(POSE_MODES))
DECODER_CHOICES = {"Distilled (fast)": "distilled", "DDIM (paper)": "ddim"}


class WorkFolders:
    """One folder per request under a single root that the app removes at exit. A failed
    request's folder goes at once; a finished one once Gradio has copied its video into its own
    cache (``grace`` seconds after the request ended, swept when the next request starts), so a
    Space that runs for weeks keeps only the folders of requests in flight."""

    def __init__(self, grace: float = 10.0):
        self.root = Path(tempfile.mkdtemp(prefix="talker-app-"))
        self.grace = grace
        self._finished: dict[Path, float] = {}
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, True)

    def new(self) -> Path:
        self.sweep()
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def done(self, folder: Path, failed: bool = False) -> None:
        if failed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            with self._lock:
                self._finished[folder] = time.monotonic()

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [f for f, t in self._finished.items() if now - t >= self.grace]
            for folder in old:
                del self._finished[folder]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # glibc only
    except OSError:
        return None


LIBC = _libc()
if LIBC is not None:
    # glibc gives every thread that allocates its own memory arena and keeps what is freed there;
    # Gradio runs requests on a pool of threads, so a server's memory climbed request by request
    # (bench/app_soak.py). Two arenas, and freed memory handed back after each request, keep it flat.
    LIBC.mallopt(-8, 2)  # M_ARENA_MAX


def release_memory() -> None:
    """Hand the memory a finished request freed back to the system (glibc; elsewhere a no-op)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


def quiet(component):
    """``component`` whose own input checks (a slider's bounds, a radio's choices) answer an API
    caller with their message but, the mistake being the caller's, print no traceback in the log."""
    check = component.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error as e:
            raise gr.Error(e.message, print_exception=False) from None

    component.preprocess = preprocess
    return component


def user_error(error: Exception, uploads=()) -> gr.Error:
    """A user's mistake as a message in the page: no traceback in the server log, and the
    server's paths of uploaded files shown as the files' own names."""
    message = str(error)
    for path in uploads:
        if path:
            message = message.replace(str(path), Path(path).name)
    return gr.Error(message, print_exception=False)


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


def build_demo(pipes: dict[str, DAETalkerPipeline], folders: WorkFolders | None = None) -> gr.Blocks:
    names = list(pipes)
    folders = folders or WorkFolders()

    def finish(folder: Path, failed: bool = False) -> None:
        """A request has ended: its work folder goes (at once if it failed), its memory back."""
        folders.done(folder, failed)
        release_memory()

    def request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder):
        """The form → (pipeline, keyword arguments); a TalkerError for what is wrong with it."""
        if not audio:
            raise InputError("Please upload or record some speech first.")
        return settings(pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder)

    def settings(pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder):
        """The form's settings → (pipeline, keyword arguments of its generation methods)."""
        pipe = pipes.get(speaker or names[0])
        if pipe is None:
            raise InputError(f"Unknown speaker {speaker!r}; available: {', '.join(names)}")
        mode = POSE_MODES.get(pose_mode, pose_mode)
        pose = load_pose_file(pose_file) if (pose_file and mode != "predicted") else None
        if pose is not None and mode == "static":
            pose = pose[0]
        emotion = dict(zip(EMOTIONS, (happy, sad, angry, surprised), strict=True))
        decoder = DECODER_CHOICES.get(decoder, decoder) or None
        steps = None if steps is None else int(steps)
        return pipe, dict(num_inference_steps=pipe.steps_for(decoder, steps), decoder=decoder,
                          pose_mode=mode, pose=pose,
                          emotion={k: float(v or 0) for k, v in emotion.items() if k in pipe.emotion_names},
                          generator=torch.Generator().manual_seed(int(seed or 0)))

    @spaces.GPU(duration=120)
    def generate(audio, pose_mode=DEFAULT_POSE_MODE, pose_file=None, steps=None, happy=0, sad=0, angry=0, surprised=0, seed=0,
                 speaker=None, decoder=None, progress=gr.Progress(track_tqdm=True)):
        """Speech → talking-face mp4 (H.264 + AAC). Errors come back as readable messages."""
        folder = folders.new()
        try:
            pipe, kwargs = request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder)
            out = folder / "talking-face.mp4"
            pipe.generate_video(audio, out, max_duration=MAX_SECONDS, **kwargs)
        except TalkerError as e:
            finish(folder, failed=True)
            raise user_error(e, (audio, pose_file)) from None
        except BaseException:
            finish(folder, failed=True)
            raise
        finish(folder)
        return str(out)

    @spaces.GPU(duration=120)
    def stream(audio, pose_mode=DEFAULT_POSE_MODE, pose_file=None, steps=None, happy=0, sad=0, angry=0, surprised=0, seed=0,
               speaker=None, decoder=None):
        """Speech → one-second MPEG-TS segments (with their audio) to the live player as frames
        are made, then the whole mp4 for download."""
        folder = folders.new()
        try:
            pipe, kwargs = request(audio, pose_mode, pose_file, steps, happy, sad, angry, surprised, seed, speaker, decoder)
            wave = load_audio(audio, max_duration=MAX_SECONDS, fps=pipe.fps)
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
            finish(folder, failed=True)
            raise user_error(e, (audio, pose_file)) from None
        except BaseException:  # an error, or the browser went away (the generator is closed)
            finish(folder, failed=True)
            raise
        finish(folder)
        yield gr.skip(), str(folder / "talking-face.mp4")

    def live_step(block, session, pose_mode=DEFAULT_POSE_MODE, steps=None, happy=0, sad=0, angry=0, surprised=0,
                  seed=0, speaker=None, decoder=None):
        """One block of microphone audio from the browser → the newest frame whose audio is in
        (watermarked, at the size videos are written) and the live session, kept per browser tab.
        Each block computes one frame, so the picture keeps up with the voice on any machine."""
        if block is None:
            return gr.skip(), session
        rate, samples = block
        try:
            if session is None or session.intake.sampling_rate != rate:
                pipe, kwargs = settings(pose_mode, None, steps, happy, sad, angry, surprised, seed, speaker, decoder)
                if kwargs["decoder"] in (None, "distilled"):  # the speaker's live decoder: its light one where it has one
                    kwargs["decoder"] = pipe.live_decoder
                session = pipe.live_session(rate, newest_only=True, **kwargs)
            frames = session.push(samples)
        except TalkerError as e:
            raise user_error(e) from None
        if not frames:
            return gr.skip(), session
        return session.pipe.mark_frames(frames[-1][1]), session

    first = pipes[names[0]]
    consent = first.speaker.get("consent", "(this checkpoint has no consent statement)")
    keep = int(KEEP_MINUTES * 60)
    with gr.Blocks(title="talker: speech-driven talking faces", delete_cache=(max(60, keep // 4), keep)) as demo:
        gr.Markdown(
            "# talker: speech-driven talking faces\n"
            "Upload or record speech; a diffusion autoencoder driven by a Conformer *speech2latent* network "
            "(after DAE-Talker) turns it into a video of the speaker talking. **Every video is synthetic.**"
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
                speaker = gr.Dropdown(names, value=names[0], label="Speaker", visible=len(names) > 1)
                pose_mode = gr.Radio(list(POSE_MODES), value=DEFAULT_POSE_MODE, label="Head motion")
                pose_file = gr.File(label="Pose file (.csv yaw,pitch,roll or .npy, degrees; optional)",
                                    file_types=[".csv", ".npy"], type="filepath", height=120, visible=False)
                pose_mode.change(lambda m: gr.update(visible=POSE_MODES.get(m) != "predicted"), pose_mode, pose_file,
                                 queue=False, api_visibility="private")
                fast = first.distilled_unet is not None
                decoder = gr.Radio(list(DECODER_CHOICES), value=next(iter(DECODER_CHOICES)) if fast else "DDIM (paper)",
                                   label="Decoder", visible=fast)
                steps = gr.Slider(1, slider_top(first.default_decoder), value=first.default_steps(), step=1,
                                  label=f"Denoising steps (distilled: {DEFAULT_DISTILLED_STEPS}, up to {MAX_DISTILLED_STEPS}; "
                                        f"DDIM: {DEFAULT_STEPS}, the paper used {MAX_DDIM_STEPS})")
                decoder.change(lambda d: gr.update(maximum=slider_top(DECODER_CHOICES.get(d)),
                                                   value=first.default_steps(DECODER_CHOICES.get(d))),
                               decoder, steps, queue=False, api_visibility="private")
                with gr.Accordion("Emotion", open=False):
                    sliders = [gr.Slider(0, 1, value=0, step=0.05, label=name.capitalize()) for name in EMOTIONS]
                seed = gr.Number(value=0, precision=0, label="Seed (the fixed noise image)")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary")
                    stream_button = gr.Button("Stream (watch while it is made)", visible=CAN_STREAM)
            with gr.Column():
                live = gr.Video(label="Live", streaming=True, autoplay=True, visible=False)
                video = gr.Video(label="Talking face", format="mp4", buttons=["download"])
                with gr.Accordion("Live from your microphone", open=False, visible=can_go_live(first)):
                    gr.Markdown("Record and the face follows your voice as you speak: each picture is the newest "
                                f"frame whose audio is in ({first.streaming_speech_to_latent.lookahead_ms} ms look-ahead). "
                                "Uses the settings on the left; the picture is a preview, not a video file.")
                    mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone")
                    live_face = gr.Image(label="Live face", format="jpeg", interactive=False, buttons=[], elem_id="live-face")
                    live_session = gr.State(None)
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
        # the step count is checked against the decoder chosen with it (1-8 distilled, 1-1000 DDIM) by
        # the pipeline, not against the slider's top, which follows the decoder only in the browser
        steps.preprocess = lambda payload: payload
        inputs = [quiet(c) for c in (audio, pose_mode, pose_file, steps, *sliders, seed, speaker, decoder)]
        button.click(lambda: gr.update(visible=False), None, live, queue=False, api_visibility="private").then(
            generate, inputs, video, api_name="generate", concurrency_limit=1, concurrency_id="gpu")
        stream_button.click(lambda: (gr.update(visible=True), None), None, [live, video], queue=False, api_visibility="private").then(
            stream, inputs, [live, video], api_name="stream", concurrency_limit=1, concurrency_id="gpu")
        live_inputs = [quiet(c) for c in (pose_mode, steps, *sliders, seed, speaker, decoder)]
        mic.stream(live_step, [mic, live_session, *live_inputs], [live_face, live_session], api_name="live",
                   stream_every=LIVE_BLOCK_S, time_limit=int(MAX_SECONDS), concurrency_limit=1, concurrency_id="gpu")
        # a new recording starts a new session (a fresh audio clock) and releases the old one's memory
        mic.start_recording(lambda: None, None, live_session, queue=False, api_visibility="private")
        mic.stop_recording(lambda: None, None, live_session, queue=False, api_visibility="private").then(
            release_memory, None, None, queue=False, api_visibility="private")
        if EXAMPLES:
            gr.Examples([[str(p)] for p in EXAMPLES], inputs=[audio], label="Example speech")
    demo.queue(max_size=QUEUE_SIZE)
    return demo


def can_go_live(pipe: DAETalkerPipeline) -> bool:
    """Whether the speaker has a streaming speech2latent (the live panel needs one)."""
    return bool(getattr(pipe.streaming_speech_to_latent.config, "chunk_frames", 0))


def slider_top(decoder: str) -> int:
    """The step slider's top: the distilled decoder's 8, DDIM's 100 (the paper's count)."""
    return MAX_DISTILLED_STEPS if decoder == "distilled" else MAX_DDIM_STEPS


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
