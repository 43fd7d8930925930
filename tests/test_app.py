"""The Gradio app, served for real and called through its API with gradio_client."""

import socket
import sys
from pathlib import Path

import av
import pytest
from conftest import write_audio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(speaker_dir, tmp_path_factory):
    """The app on a real port, with work folders swept as soon as a request has ended."""
    import app
    from gradio_client import Client

    app.MAX_SECONDS = 3.0
    folders = app.WorkFolders(grace=0)
    demo = app.build_demo(app.load_speakers([str(speaker_dir)]), folders)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield Client(url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False), folders, url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def handle(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def call(client, audio, **kw):
    from gradio_client import handle_file

    args = dict(audio=handle_file(str(audio)) if audio else None, pose_mode="Predicted from speech", pose_file=None,
                steps=2, happy=0.5, sad=0, angry=0, surprised=0, seed=1, speaker="tiny", decoder="DDIM (paper)")
    args.update(kw)
    return client.predict(*args.values(), api_name="/generate")


def test_generate_returns_an_mp4_with_video_and_audio(client, tmp_path):
    wav = write_audio(tmp_path / "speech.wav", 2.0, 22050, 2)
    path = call(client, wav)
    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(v))
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert n == 50 and abs(float(a.duration * a.time_base) - 2.0) <= 0.04


def test_api_names_the_endpoint_and_its_inputs(client, tmp_path):
    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")
    params = api["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in params][:4] == ["audio", "pose_mode", "pose_file", "steps"]
    # only the speech is required: a script need not pass a pose file it does not use
    assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] == ["audio"]
    path = client.predict(handle_file(str(write_audio(tmp_path / "a.wav", 1.0))), api_name="/generate")
    with av.open(path) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 25


def test_bad_inputs_are_readable_errors_and_the_server_keeps_serving(served, tmp_path, capfd):
    from gradio_client.exceptions import AppError

    client, folders, _ = served
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 50)
    long = write_audio(tmp_path / "long.wav", 4.0)
    far = tmp_path / "far.csv"
    far.write_text("yaw,pitch,roll\n400,0,0\n")
    ok = write_audio(tmp_path / "ok.wav", 1.0)
    # the message names the uploaded file by its own name, not by the server's path to it
    for audio, kw, message in ((None, {}, "upload or record some speech"),
                               (text, {}, "^notes.wav: not a readable audio file"),
                               (long, {}, "^long.wav: 4.0 s is too long; at most 3 s"),
                               (ok, dict(pose_mode="Still (speaker's average pose)", pose_file=handle(far)),
                                "^far.csv: angles are degrees within ±90"),
                               (ok, dict(steps=0), "num_inference_steps must be an integer in 1–1000"),
                               (ok, dict(steps=1001), "num_inference_steps must be an integer in 1–1000"),
                               (ok, dict(happy=1.5), "greater than maximum value 1")):
        with pytest.raises(AppError, match=message):
            call(client, audio, **kw)
    with pytest.raises(AppError, match="not in the list of choices"):
        call(client, ok, speaker="nobody")
    out = call(client, write_audio(tmp_path / "ok2.wav", 1.0), pose_mode="Still (speaker's average pose)")
    with av.open(out) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 25
    # a user's mistake is not the server's: no traceback in its log
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err, (log.out + log.err)[-3000:]
    # work folders of failed requests are gone at once, those of finished ones by the next request
    assert len(list(folders.root.iterdir())) <= 1


def test_requests_leave_no_folders_behind(served, tmp_path):
    client, folders, _ = served
    wav = write_audio(tmp_path / "speech.wav", 0.5)
    for seed in range(4):
        call(client, wav, seed=seed)
    assert len(list(folders.root.iterdir())) <= 1  # the last request's, until the next one starts


def test_many_concurrent_requests_are_answered_or_told_to_retry(served, tmp_path):
    """24 requests at once: each gets its video, or the queue-full message to retry later."""
    import app
    from gradio_client import handle_file

    client = served[0]
    wav = handle_file(str(write_audio(tmp_path / "speech.wav", 0.5)))
    jobs = [client.submit(wav, "Predicted from speech", None, 1, 0, 0, 0, 0, i, "tiny", "DDIM (paper)",
                          api_name="/generate") for i in range(24)]
    done, busy = 0, 0
    for job in jobs:
        try:
            with av.open(job.result(timeout=300)) as c:
                done += sum(1 for _ in c.decode(c.streams.video[0])) == 13
        except Exception as e:  # the client raises the server's message
            assert "queue is full" in str(e).lower(), repr(e)
            busy += 1
    assert done + busy == 24 and done >= app.QUEUE_SIZE
    assert call(client, tmp_path / "speech.wav")  # and it keeps serving


@pytest.mark.skipif(not __import__("shutil").which("ffprobe"), reason="Gradio's streaming video needs ffmpeg/ffprobe")
def test_stream_sends_one_second_segments_then_the_whole_video(client, tmp_path):
    from gradio_client import handle_file

    wav = write_audio(tmp_path / "speech.wav", 2.4, 16000)
    job = client.submit(handle_file(str(wav)), "Predicted from speech", None, 2, 0, 0, 0, 0, 1, "tiny", "DDIM (paper)",
                        api_name="/stream")
    live, video = job.result(timeout=300)
    outputs = job.outputs()
    # 60 frames: segments of 25, 25 and 10 frames reach the live player, then the whole mp4
    assert len(outputs) == 4
    assert all(str(live).endswith(".m3u8") and whole is None for live, whole in outputs[:3])
    with av.open(video) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 60 and c.streams.audio


def test_live_step_shows_marked_frames_of_the_newest_audio_and_names_bad_settings(live_speaker_dir):
    """The live panel's handler, as Gradio calls it for each 0.1-s microphone block (48 kHz int16):
    one watermarked picture per block once a chunk of frames is heard, a session per recording."""
    import gradio as gr
    import numpy as np

    import app
    from conftest import speech_like
    from talker.watermark import extract

    demo = app.build_demo(app.load_speakers([str(live_speaker_dir)]))
    live_step = next(f for f in demo.fns.values() if f.api_name == "live").fn
    audio = (speech_like(1.0, 48000) * 20000).astype(np.int16)
    session, pictures = None, []
    for i in range(0, len(audio), 4800):
        picture, session = live_step((48000, audio[i : i + 4800]), session, "Predicted from speech", 2)
        if not isinstance(picture, dict):  # gr.skip() until a whole chunk of frames is heard
            pictures.append(picture)
    # blocks of 2.5 frames, chunks of 3: after block k the newest whole chunk ends at frame
    # floor(2.5k) // 3 × 3: new at blocks 2, 3, 4, 5, 6, 8, 9 and 10
    assert len(pictures) == 8 and session.skipped + len(pictures) == session.done == 24
    found = extract(np.stack(pictures))
    assert pictures[0].shape == (256, 256, 3) and found.found and found.payload == session.pipe.watermark_payload
    assert live_step(None, session)[1] is session
    with pytest.raises(gr.Error, match="pose_mode") as e:
        live_step((48000, audio[:4800]), None, "sideways")
    assert not e.value.print_exception


def test_the_live_panel_renders_with_the_light_decoder_in_place_of_the_distilled_one(live_speaker_dir):
    """A speaker with a light decoder: the live panel's sessions render with it when the form says
    the distilled decoder (what live input is for), and with DDIM when the form says DDIM."""
    import numpy as np

    import app
    from conftest import speech_like
    from talker import DAEDecoderUNet
    from talker.training.distill import new_student

    pipes = app.load_speakers([str(live_speaker_dir)])
    pipe = next(iter(pipes.values()))
    distilled = DAEDecoderUNet.from_config(pipe.unet.config, prediction_type="sample").eval()
    pipe.register_modules(distilled_unet=distilled, light_unet=new_student(distilled, 4).eval())
    live_step = next(f for f in app.build_demo(pipes).fns.values() if f.api_name == "live").fn
    block = (48000, (speech_like(0.1, 48000) * 20000).astype(np.int16))
    _, session = live_step(block, None, "Predicted from speech", 1, 0, 0, 0, 0, 0, None, "Distilled (fast)")
    assert session.settings.unet is pipe.light_unet
    _, session = live_step(block, None, "Predicted from speech", 4, 0, 0, 0, 0, 0, None, "DDIM (paper)")
    assert session.settings.unet is pipe.unet and session.settings.steps == 4
