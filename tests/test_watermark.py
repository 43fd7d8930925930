"""Provenance: the invisible watermark in generated videos, `talker detect`, container tags."""

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import speech_like

from talker.errors import InputError
from talker.evaluation.metrics import psnr
from talker.video import read_video, write_video
from talker.watermark import Payload, detect_video, embed, extract

TALKER = str(Path(sys.executable).parent / "talker")


def talker(*args):
    return subprocess.run([TALKER, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def photo_frames(n=6, size=256):
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)))
    shifts = [np.roll(img, k, axis=1) for k in range(n)]  # a little motion
    return np.stack(shifts)


def reencode(src, dst, crf=28, scale=None, start_s=None, seconds=None):
    """Re-encode with the ffmpeg program (imageio-ffmpeg's build) at libx264 ``crf``; optionally
    scaled to ``scale`` × size and back, or only ``seconds`` from ``start_s`` kept."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y"]
    if start_s is not None:
        cmd += ["-ss", str(start_s), "-t", str(seconds)]
    cmd += ["-i", str(src)]
    if scale is not None:
        cmd += ["-vf", f"scale=iw*{scale}:ih*{scale},scale=iw/{scale}:ih/{scale}"]
    cmd += ["-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return dst


def test_payload_round_trip_invisible_and_absent_from_unmarked_frames():
    frames = photo_frames()
    payload = Payload(0xDEADBEEF)
    marked = embed(frames, payload)
    assert psnr(marked, frames) > 40
    found = extract(marked)
    assert found.found and found.payload == payload and found.score > 0.8
    assert np.array_equal(found.bits, payload.bits())
    clean = extract(frames)
    assert not clean.found and abs(clean.score) < 0.15
    assert embed(frames[0], payload).shape == frames[0].shape
    with pytest.raises(InputError, match="at least 256"):
        embed(frames[:, :128, :128], payload)


@pytest.fixture(scope="module")
def marked_video(tmp_path_factory):
    from conftest import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.speaker = {"name": "tiny"}
    path = tmp_path_factory.mktemp("wm") / "gen.mp4"
    pipe.generate_video(speech_like(4.0), path, sampling_rate=16000, num_inference_steps=2,
                        generator=torch.Generator().manual_seed(0))
    return path, pipe.watermark_payload, pipe


def test_generated_video_is_marked_tagged_and_upscaled(marked_video):
    path, payload, _ = marked_video
    video = read_video(path)
    assert video.frames.shape[1:] == (256, 256, 3)  # the 16 px speaker, upscaled for the watermark
    with av.open(str(path)) as c:
        assert "Synthetic video made by talker" in c.metadata["comment"] and payload.model_id_hex in c.metadata["comment"]
    r = talker("detect", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"model id {payload.model_id_hex}" in r.stdout and "synthetic=yes" in r.stdout


@pytest.mark.parametrize("transform", ["crf28", "half_size_and_back", "two_second_cut"])
def test_watermark_survives_common_edits(marked_video, tmp_path, transform):
    path, payload, _ = marked_video
    kwargs = {"crf28": {}, "half_size_and_back": {"scale": 0.5}, "two_second_cut": {"start_s": 1.0, "seconds": 2.0}}
    edited = reencode(path, tmp_path / "edited.mp4", crf=28, **kwargs[transform])
    d = detect_video(edited)
    assert d.found and d.payload == payload
    assert np.mean(d.bits == payload.bits()) == 1.0
    if transform == "two_second_cut":
        assert d.frames == 50


def test_no_watermark_option_and_model_id_follows_the_weights(marked_video, tmp_path):
    _, payload, pipe = marked_video
    out = tmp_path / "plain.mp4"
    pipe.generate_video(speech_like(1.0), out, sampling_rate=16000, num_inference_steps=1, watermark=False)
    assert read_video(out).frames.shape[1] == 16  # no upscaling needed
    r = talker("detect", out)
    assert r.returncode == 1 and "no watermark found" in r.stdout and "Synthetic video made by talker" in r.stdout
    frames = pipe(speech_like(1.0), sampling_rate=16000, num_inference_steps=1).frames
    pipe.write_video(tmp_path / "own.mp4", frames, audio=speech_like(1.0))
    assert detect_video(tmp_path / "own.mp4").payload == payload
    with torch.no_grad():
        pipe.unet.conv_in.bias.add_(1.0)
    pipe._watermark_payload = None
    assert pipe.watermark_payload != payload
    with pytest.raises(InputError, match="output_size of at least 256"):
        pipe.generate_video(speech_like(1.0), tmp_path / "small.mp4", sampling_rate=16000, output_size=128)


def test_no_false_positive_on_the_synthetic_speakers_training_videos(tmp_path):
    r = talker("synth", "--out", tmp_path / "synth", "--clips", 2, "--seconds", 3, "--seed", 5, "-q")
    assert r.returncode == 0, r.stderr
    for video in sorted((tmp_path / "synth" / "videos").glob("*.mp4")):
        d = detect_video(video)
        assert not d.found and d.score < 0.15
        assert talker("detect", video).returncode == 1
    plain = write_video(tmp_path / "plain.mp4", photo_frames(30))
    assert not detect_video(plain).found
