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
def client(speaker_dir, tmp_path_factory):
    import app
    from gradio_client import Client

    app.MAX_SECONDS = 3.0
    demo = app.build_demo(app.load_speakers([str(speaker_dir)]))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield Client(url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)
    finally:
        demo.close()


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


def test_api_names_the_endpoint_and_its_inputs(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]
    assert params[:4] == ["audio", "pose_mode", "pose_file", "steps"]


def test_bad_inputs_are_readable_errors_and_the_server_keeps_serving(client, tmp_path):
    from gradio_client.exceptions import AppError

    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 50)
    long = write_audio(tmp_path / "long.wav", 4.0)
    for audio, message in ((None, "upload or record some speech"), (text, "not a readable audio file"),
                           (long, "too long; at most 3 s")):
        with pytest.raises(AppError, match=message):
            call(client, audio)
    with pytest.raises(AppError, match="not in the list of choices"):
        call(client, write_audio(tmp_path / "ok.wav", 1.0), speaker="nobody")
    ok = call(client, write_audio(tmp_path / "ok2.wav", 1.0), pose_mode="Still (speaker's average pose)")
    with av.open(ok) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 25


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
