"""DAETalkerPipeline and DiffusionAutoencoderPipeline on tiny random components."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import RES, Z_DIM, speech_like, tiny_pipeline, write_audio

from talker import DAETalkerPipeline
from talker.errors import AudioError, CheckpointError, InputError, TalkerError

STEPS = 2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def run(pipe, audio=None, **kw):
    if audio is None:
        audio, kw["sampling_rate"] = speech_like(1.0), 16000
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("generator", gen())
    return pipe(audio, **kw)


def test_output_shapes_and_types(pipe, wav_3s):
    out = run(pipe, str(wav_3s))
    assert out.fps == 25
    assert out.frames.shape == (75, RES, RES, 3) and out.frames.dtype == np.uint8
    assert out.poses.shape == (75, 3) and out.latents.shape == (75, Z_DIM)
    assert out.fixed_noise.shape == (1, 3, RES, RES)
    assert out.frames.std() > 1  # not a blank image
    pil = run(pipe, output_type="pil").frames
    assert len(pil) == 25 and pil[0].size == (RES, RES)
    pt = run(pipe, output_type="pt")
    assert pt.frames.shape == (25, 3, RES, RES) and 0 <= pt.frames.min() and pt.frames.max() <= 1
    assert isinstance(pt.poses, torch.Tensor)
    frames, poses, latents, fps, noise = run(pipe, return_dict=False)
    assert np.array_equal(frames, run(pipe).frames) and fps == 25


def test_same_seed_same_frames_other_seed_other_noise(pipe):
    a, b = run(pipe, generator=gen(7)), run(pipe, generator=gen(7))
    assert np.array_equal(a.frames, b.frames)
    c = run(pipe, generator=gen(8))
    assert not torch.equal(a.fixed_noise, c.fixed_noise)
    assert not np.array_equal(a.frames, c.frames)
    assert np.array_equal(a.latents, c.latents)  # the latents come from the audio alone


def test_same_latents_and_noise_give_the_same_frames(pipe):
    """Frames depend only on (z_sem, x_T): decoding the pipeline's latents again reproduces them,
    whatever the batch size."""
    out = run(pipe, frame_batch_size=25)
    again = pipe.autoencoder.decode(torch.from_numpy(out.latents), out.fixed_noise, STEPS, batch_size=4)
    assert np.abs(again.astype(int) - out.frames.astype(int)).max() <= 1
    small_batches = run(pipe, frame_batch_size=3)
    assert np.abs(small_batches.frames.astype(int) - out.frames.astype(int)).max() <= 1


def test_one_fixed_noise_is_shared_by_all_frames(pipe):
    """With a constant latent every frame is identical: the only per-frame input is z_sem."""
    z = torch.from_numpy(run(pipe).latents[:1]).repeat(6, 1)
    frames = pipe.autoencoder.decode(z, num_inference_steps=STEPS, generator=gen(3))
    assert all(np.array_equal(frames[0], f) for f in frames)


def test_pose_modes(pipe):
    n = 25
    predicted = run(pipe, pose_mode="predicted")
    assert predicted.poses.shape == (n, 3) and predicted.poses.std(axis=0).max() > 0
    static = run(pipe, pose_mode="static", pose=[3.0, -2.0, 1.0])
    assert np.allclose(static.poses, [[3.0, -2.0, 1.0]] * n, atol=1e-5)
    mean = run(pipe, pose_mode="static")
    assert np.allclose(mean.poses, [[2.0, -1.0, 0.5]] * n, atol=1e-5)  # the speaker's mean pose
    ref = np.stack([np.linspace(-10, 10, 10), np.zeros(10), np.ones(10)], axis=1)
    looped = run(pipe, pose_mode="reference", pose=ref)
    assert looped.poses.shape == (n, 3)
    assert np.allclose(looped.poses[:10], ref, atol=1e-5)
    assert np.allclose(looped.poses[10:18], ref[::-1][1:9], atol=1e-5)  # back and forth, no jump
    assert np.abs(np.diff(looped.poses[:, 0])).max() <= 20 / 9 + 1e-4
    long_ref = np.random.default_rng(0).normal(size=(60, 3)) * 5
    trimmed = run(pipe, pose_mode="reference", pose=long_ref)
    assert np.allclose(trimmed.poses, long_ref[:n], atol=1e-4)
    assert not np.allclose(trimmed.latents, looped.latents)
    assert not np.allclose(static.latents, mean.latents)


def test_reference_pose_defaults_to_the_speakers(speaker_dir):
    pipe = DAETalkerPipeline.from_pretrained(speaker_dir)
    pipe.set_progress_bar_config(disable=True)
    out = run(pipe, pose_mode="reference")
    ref = np.asarray(pipe.speaker["reference_pose"], dtype=np.float32)
    assert np.allclose(out.poses, ref[:25], atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(pose_mode="sideways"), "pose_mode must be one of predicted, static, reference"),
        (dict(pose_mode="reference"), "needs pose"),
        (dict(pose_mode="reference", pose=np.zeros((5, 2))), r"\(M, 3\)"),
        (dict(pose_mode="static", pose=np.zeros(4)), "3 angles"),
        (dict(pose_mode="reference", pose=np.full((5, 3), np.nan)), "NaN"),
        (dict(pose_mode="predicted", pose=np.zeros((5, 3))), "only used with"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer in 1–1000"),
        (dict(num_inference_steps=2.5), "num_inference_steps"),
        (dict(output_type="latent"), "output_type must be one of np, pil, pt"),
        (dict(frame_batch_size=0), "frame_batch_size"),
        (dict(emotion={"joyful": 0.5}), "unknown emotion joyful; allowed: happy, sad, angry, surprised"),
        (dict(emotion={"happy": 1.5}), r"must be a number in \[0, 1\]"),
        (dict(emotion={"sad": -0.1}), r"\[0, 1\]"),
        (dict(emotion=[0.5, 0.5]), "has 4 intensities"),
        (dict(emotion="happy"), "must be a dict"),
        (dict(fixed_noise=torch.zeros(1, 3, 8, 8)), "fixed_noise must have shape"),
        (dict(pose_mode="static", pose=[1e6, 0, 0]), "within ±90"),
        (dict(pose_mode="reference", pose=np.full((5, 3), -91.0)), "within ±90"),
    ],
)
def test_bad_arguments_raise_input_error(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        run(pipe, **kwargs)


def test_emotion_dict_and_vector_agree_and_change_the_latents(pipe):
    neutral = run(pipe)
    as_dict = run(pipe, emotion={"happy": 0.8, "surprised": 0.3})
    as_vector = run(pipe, emotion=[0.8, 0.0, 0.0, 0.3])
    as_tensor = run(pipe, emotion=torch.tensor([0.8, 0.0, 0.0, 0.3]))
    zeros = run(pipe, emotion={"happy": 0.0})
    assert np.array_equal(as_dict.latents, as_vector.latents)
    assert np.array_equal(as_dict.latents, as_tensor.latents)
    assert np.array_equal(zeros.latents, neutral.latents)
    assert not np.allclose(as_dict.latents, neutral.latents)


@pytest.mark.parametrize("seconds,rate,channels", [(0.5, 8000, 1), (2.3, 22050, 2), (4.0, 44100, 2), (1.1, 48000, 1)])
def test_frame_count_matches_audio_duration(pipe, tmp_path, seconds, rate, channels):
    path = write_audio(tmp_path / "a.flac", seconds, rate, channels)
    out = run(pipe, str(path), num_inference_steps=1)
    samples = round(seconds * rate)
    assert len(out.frames) == int(np.floor(samples * 25 / rate + 0.5))  # duration × 25, half up


def test_thirty_seconds_of_audio(pipe):
    out = run(pipe, speech_like(30.0, 48000), sampling_rate=48000, num_inference_steps=1, frame_batch_size=250)
    assert out.frames.shape[0] == 750 and out.poses.shape == (750, 3)


def test_silent_audio_gives_a_video(pipe):
    out = run(pipe, np.zeros(16000 * 2, np.float32), sampling_rate=16000)
    assert out.frames.shape == (50, RES, RES, 3)


@pytest.mark.parametrize(
    "audio,kwargs,message",
    [
        (np.zeros(0, np.float32), dict(sampling_rate=16000), "no samples"),
        (np.full(16000, np.nan, np.float32), dict(sampling_rate=16000), "NaN"),
        (np.zeros(16000 * 5, np.float32), dict(sampling_rate=16000, max_duration=4.0), "too long"),
        (np.zeros(16000, np.float32), dict(), "sampling_rate is required"),
        (speech_like(1.0) * 32768, dict(sampling_rate=16000), r"samples reach .*float audio is in \[-1, 1\].*divide by 32768"),
    ],
)
def test_bad_audio_raises_audio_error(pipe, audio, kwargs, message):
    with pytest.raises(AudioError, match=message):
        pipe(audio, num_inference_steps=1, **kwargs)


def test_audio_a_little_over_full_scale_is_scaled_into_range(pipe):
    quiet = speech_like(1.0)
    loud = quiet * (1.5 / np.abs(quiet).max())  # float audio with overs, as processed audio has
    a = run(pipe, loud, sampling_rate=16000)
    b = run(pipe, quiet / np.abs(quiet).max(), sampling_rate=16000)
    np.testing.assert_allclose(a.latents, b.latents, atol=1e-4)


def test_generate_video_checks_its_output_before_any_work(pipe, tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr(type(pipe), "_generate", lambda *a, **k: decoded.append(1) or iter(()))
    (tmp_path / "folder.mp4").mkdir()
    for path, kwargs, message in ((tmp_path / "out.mp4", dict(output_size=0), "output_size must be a frame side"),
                                  (tmp_path / "out.mp4", dict(output_size=128), "watermark needs output_size"),
                                  (tmp_path / "folder.mp4", {}, "is a folder"),
                                  (tmp_path / "out.avi", {}, "written as .mp4")):
        with pytest.raises(TalkerError, match=message):
            pipe.generate_video(speech_like(1.0), path, sampling_rate=16000, **kwargs)
    assert not decoded and sorted(p.name for p in tmp_path.iterdir()) == ["folder.mp4"]


def test_save_and_load_from_a_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "spk")
    files = [p for p in (tmp_path / "spk").rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix not in (".json",)]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    index = json.loads((tmp_path / "spk" / "model_index.json").read_text())
    assert index["_class_name"] == "DAETalkerPipeline"
    assert index["speech_to_latent"] == ["talker.models.speech2latent", "Speech2Latent"]
    loaded = DAETalkerPipeline.from_pretrained(tmp_path / "spk")
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(run(loaded).frames, run(pipe).frames)


def test_load_by_hub_repo_id_from_the_cache(speaker_dir, hub_cache):
    cache, repo_id = hub_cache
    from_folder = DAETalkerPipeline.from_pretrained(speaker_dir)
    from_hub = DAETalkerPipeline.from_pretrained(repo_id, cache_dir=cache)
    for p in (from_folder, from_hub):
        p.set_progress_bar_config(disable=True)
    assert from_hub.speaker["name"] == "tiny"
    assert np.array_equal(run(from_hub, generator=gen(5)).frames, run(from_folder, generator=gen(5)).frames)


def test_missing_checkpoints_and_parts(speaker_dir, tmp_path, hub_cache):
    cache, _ = hub_cache
    with pytest.raises(CheckpointError, match="not in the Hub cache"):
        DAETalkerPipeline.from_pretrained("someone/not-cached", cache_dir=cache)
    with pytest.raises(CheckpointError, match="neither a folder nor a Hub repo id"):
        DAETalkerPipeline.from_pretrained(str(tmp_path / "nowhere" / "at" / "all"))
    broken = tmp_path / "broken"
    shutil.copytree(speaker_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match=r"'unet/' has no .safetensors weights \(found diffusion_pytorch_model.bin"):
        DAETalkerPipeline.from_pretrained(broken)
    shutil.rmtree(broken / "speech_to_latent")
    with pytest.raises(CheckpointError, match="'speech_to_latent/' is missing"):
        DAETalkerPipeline.from_pretrained(broken)
    (broken / "model_index.json").unlink()
    with pytest.raises(CheckpointError, match="model_index.json is missing"):
        DAETalkerPipeline.from_pretrained(broken)


def test_load_in_bfloat16(speaker_dir):
    pipe = DAETalkerPipeline.from_pretrained(speaker_dir, dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == pipe.speech_to_latent.dtype == torch.bfloat16
    out = run(pipe)
    assert out.frames.shape == (25, RES, RES, 3) and out.frames.dtype == np.uint8


def test_wav2vec2_front_end_round_trip(tmp_path):
    pipe = tiny_pipeline("wav2vec2")
    out = run(pipe, speech_like(1.3, 22050), sampling_rate=22050)
    assert out.frames.shape[0] == 33
    pipe.save_pretrained(tmp_path / "w2v")
    assert (tmp_path / "w2v" / "audio_encoder" / "model.safetensors").is_file()
    loaded = DAETalkerPipeline.from_pretrained(tmp_path / "w2v")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.audio_encoder).__name__ == "Wav2Vec2Model"
    again = run(loaded, speech_like(1.3, 22050), sampling_rate=22050)
    assert np.abs(again.latents - out.latents).max() < 1e-4


def test_autoencoder_encode_invert_decode(pipe):
    ae = pipe.autoencoder
    images = (np.random.default_rng(0).random((3, 24, 24, 3)) * 255).astype(np.uint8)  # resized to 16
    z = ae.encode(images)
    assert z.shape == (3, Z_DIM)
    x_T = ae.invert(images, z, num_inference_steps=4)
    assert x_T.shape == (3, 3, RES, RES) and torch.isfinite(x_T).all()
    recon = ae.decode(z, x_T, num_inference_steps=4)
    assert recon.shape == (3, RES, RES, 3)
    out = ae(images, num_inference_steps=2, generator=gen(0))
    assert out.images.shape == (3, RES, RES, 3) and out.x_T.shape == (1, 3, RES, RES)
    with pytest.raises(InputError, match=r"z_sem must be \(B, 16\)"):
        ae.decode(torch.zeros(2, 5))


def test_decoder_precision(pipe, monkeypatch):
    from talker.pipelines import ddim

    cpu = torch.device("cpu")
    monkeypatch.setattr(ddim, "cpu_has_native_bf16", lambda: True)
    assert ddim.autocast_dtype(cpu, torch.float32) is torch.bfloat16  # "auto" on a bfloat16 CPU
    assert ddim.autocast_dtype(cpu, torch.float16) is None  # weights loaded in another type stay so
    assert ddim.autocast_dtype(cpu, torch.float32, "float32") is None
    monkeypatch.setattr(ddim, "cpu_has_native_bf16", lambda: False)
    assert ddim.autocast_dtype(cpu, torch.float32) is None
    assert ddim.autocast_dtype(cpu, torch.float32, "bfloat16") is torch.bfloat16
    try:
        pipe.precision = "float32"
        full = run(pipe)
        pipe.precision = "bfloat16"
        half = run(pipe)
        assert pipe.autoencoder.precision == "bfloat16"
        pipe.precision = "float16"
        with pytest.raises(InputError, match="precision must be one of auto, float32, bfloat16"):
            run(pipe)
    finally:
        pipe.precision = "auto"
    assert np.array_equal(full.latents, half.latents)  # speech2latent is not affected
    diff = np.abs(full.frames.astype(int) - half.frames.astype(int))
    assert 0 < diff.mean() < 2, diff.mean()


def distilled_like(pipe, value: float):
    """A distilled decoder (prediction_type "sample") whose every prediction is the flat image ``value``."""
    from talker import DAEDecoderUNet

    unet = DAEDecoderUNet.from_config(pipe.unet.config, prediction_type="sample")
    for p in unet.out.parameters():
        torch.nn.init.zeros_(p)
    torch.nn.init.constant_(unet.out[-1].bias, value)
    return unet.eval()


def test_distilled_decoder_is_the_default_and_renders_its_image(pipe, tmp_path):
    assert pipe.default_decoder == "ddim" and pipe.default_steps() == 10
    with pytest.raises(InputError, match="no distilled decoder"):
        run(pipe, decoder="distilled")
    with pytest.raises(InputError, match="decoder must be one of distilled, ddim"):
        run(pipe, decoder="fast")
    ddim = run(pipe)
    pipe.register_modules(distilled_unet=distilled_like(pipe, 0.3))
    assert pipe.default_decoder == "distilled" and pipe.default_steps() == 1
    for steps in (1, 2, 4):
        # DDIM from x0 predictions lands on the predicted image, whatever the step count
        frames = run(pipe, num_inference_steps=steps).frames
        assert np.abs(frames.astype(int) - round(1.3 * 127.5)).max() <= 1
    assert np.array_equal(run(pipe, decoder="ddim").frames, ddim.frames)  # the paper's decoder stays available
    streamed = np.stack(list(pipe.stream([speech_like(1.0)], 16000, generator=gen())))
    assert np.abs(streamed.astype(int) - round(1.3 * 127.5)).max() <= 1
    # it is trained for 1-8 steps: more are refused before any work, not run for minutes
    assert run(pipe, num_inference_steps=8).frames.shape[0] == 25 and pipe.max_steps() == 8
    with pytest.raises(InputError, match="renders in 1–8 steps"):
        run(pipe, num_inference_steps=20)
    with pytest.raises(InputError, match="renders in 1–8 steps"):
        next(pipe.stream([speech_like(1.0)], 16000, num_inference_steps=1000))
    assert run(pipe, decoder="ddim", num_inference_steps=20).frames.shape[0] == 25 and pipe.max_steps("ddim") == 1000
    pipe.save_pretrained(tmp_path / "fast")
    loaded = DAETalkerPipeline.from_pretrained(tmp_path / "fast")
    assert loaded.default_decoder == "distilled" and loaded.distilled_unet.config.prediction_type == "sample"
    assert np.array_equal(run(loaded).frames, run(pipe).frames)


def test_distillation_line_runs_from_the_noise_to_the_image():
    from diffusers import DDIMScheduler

    from talker.training.distill import line_point, timestep_grid

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    x0, x_T = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4)
    start = torch.tensor([990, 990])
    assert torch.allclose(line_point(x0, x_T, start, sched, 990), x_T, atol=1e-5)
    assert torch.allclose(line_point(x0, x_T, torch.tensor([0, 0]), sched, 990), x0, atol=0.01 * x_T.abs().max() + 1e-3)
    # the timesteps that 1- and 2-step DDIM with trailing spacing visit
    assert timestep_grid(sched.config, (1, 2)).tolist() == [499, 999]


def test_motion_weights_follow_what_moves_in_the_frames():
    from talker.training.distill import frames_to_x0, motion_weights

    frames = np.full((10, 8, 8, 3), 128, np.uint8)
    frames[::2, 5:7, 2:6] = 40  # a "mouth" that opens and closes
    w = motion_weights(frames, 4.0)
    assert w.shape == (8, 8)
    assert torch.allclose(w[:4], torch.ones(4, 8)) and (w[5:7, 2:6] > 10).all()
    assert torch.allclose(motion_weights(frames, 0.0), torch.ones(8, 8))
    x0 = frames_to_x0(frames[:2])
    assert x0.shape == (2, 3, 8, 8) and x0.min() >= -1 and x0.max() <= 1
