"""The three networks: shapes, conditioning, pose adaptor, emotion, config round trips."""

import pytest
import torch
from conftest import RES, Z_DIM, tiny_components

from talker import SemanticEncoder, Speech2Latent
from talker.errors import TalkerError


def test_encoder_maps_images_to_z_sem():
    enc = tiny_components()["encoder"]
    z = enc(torch.rand(3, 3, RES, RES) * 2 - 1)
    assert z.shape == (3, Z_DIM)
    assert not torch.allclose(z[0], z[1])


def test_normalized_z_is_standardised_in_training_and_by_measured_statistics(tmp_path):
    from talker.training.dae import _encoder_from, refresh_z_stats

    torch.manual_seed(0)
    frames = (torch.rand(40, 3, RES, RES) * 255).round().byte()
    images = frames.float() / 127.5 - 1
    plain = tiny_components()["encoder"]
    raw = plain(images)
    assert raw.std(0).mean() < raw.abs().mean()  # the pooled latent barely moves between images
    plain.save_pretrained(tmp_path / "encoder")
    # a run that starts from an encoder saved without it gains the standardisation, weights kept
    enc = _encoder_from(tmp_path / "encoder", normalize_z=True)
    assert enc.config.normalize_z and isinstance(enc.layers[-1], torch.nn.BatchNorm1d)
    z = enc.train()(images)
    assert torch.allclose(z.mean(0), torch.zeros(Z_DIM), atol=1e-4)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(Z_DIM), atol=1e-2)
    enc.eval()
    refresh_z_stats(enc, frames, batch_size=8)  # statistics measured for these weights
    assert not enc.training
    z_eval = enc(images)
    assert z_eval.mean(0).abs().max() < 0.05 and (z_eval.std(0) - 1).abs().max() < 0.2
    enc.save_pretrained(tmp_path / "normalized")
    again = SemanticEncoder.from_pretrained(tmp_path / "normalized").eval()
    assert torch.allclose(again(images), z_eval, atol=1e-5)
    plain.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "other" / "config.json").read_text()
                                                     .replace('"z_dim": %d' % Z_DIM, '"z_dim": %d' % (Z_DIM + 1)))
    with pytest.raises(TalkerError, match="do not match"):
        _encoder_from(tmp_path / "other", normalize_z=True)


def test_decoder_uses_z_sem_and_timestep_in_every_call():
    unet = tiny_components()["unet"]
    x = torch.randn(2, 3, RES, RES)
    z = torch.randn(2, Z_DIM)
    eps = unet(x, 500, z).sample
    assert eps.shape == x.shape
    assert not torch.allclose(eps, unet(x, 500, z + 1.0).sample)
    assert not torch.allclose(eps, unet(x, 10, z).sample)
    # a (1, D) latent is shared over the batch
    shared = unet(x, torch.tensor([500, 500]), z[:1]).sample
    assert torch.allclose(shared[0], eps[0], atol=1e-5)


def test_z_sem_scales_every_residual_block():
    unet = tiny_components()["unet"]
    from talker.models.unet import CondResBlock

    blocks = [m for m in unet.modules() if isinstance(m, CondResBlock)]
    assert len(blocks) >= 6  # down, middle and up paths
    x, z = torch.randn(1, 3, RES, RES), torch.randn(1, Z_DIM, requires_grad=True)
    unet(x, 100, z).sample.sum().backward()
    for block in blocks:
        assert block.z_proj.weight.grad is not None and block.z_proj.weight.grad.abs().sum() > 0


def test_speech2latent_one_token_per_frame_for_mel_and_wav2vec2_rates():
    s2l = tiny_components()["speech_to_latent"]
    for n in (1, 7, 50):
        out = s2l(torch.randn(2, 4 * n, 80))
        assert out.latents.shape == out.z_sem.shape == (2, n, Z_DIM)
        assert out.pose.shape == out.predicted_pose.shape == (2, n, 3)
    w2v = tiny_components("wav2vec2")["speech_to_latent"]
    assert w2v(torch.randn(1, 2 * 13, 32)).latents.shape == (1, 13, Z_DIM)


def test_speech2latent_output_survives_mixed_precision_training():
    """`talker train s2l --mixed-precision bf16` (and "auto" on a GPU): accelerate converts the
    forward's output back to float32 by rebuilding it from its dict."""
    from accelerate.utils import convert_to_fp32

    s2l = tiny_components()["speech_to_latent"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s2l(torch.randn(1, 4 * 5, 80))
    back = convert_to_fp32(out)
    assert type(back) is type(out) and list(back.keys()) == list(out.keys())
    assert back.latents.dtype == torch.float32 and back.pose.shape == (1, 5, 3)


def test_pose_adaptor_takes_a_given_pose_and_it_changes_the_latents():
    s2l = tiny_components()["speech_to_latent"]
    feats = torch.randn(1, 40, 80)
    predicted = s2l(feats)
    given = torch.zeros(1, 10, 3)
    given[..., 0] = 8.0
    out = s2l(feats, pose=given)
    assert torch.allclose(out.pose, given, atol=1e-5)
    assert not torch.allclose(out.latents, predicted.latents)
    other = s2l(feats, pose=-given)
    assert not torch.allclose(out.latents, other.latents)
    # the predictor's output does not depend on the given pose (it comes before the projector)
    assert torch.allclose(out.predicted_pose, other.predicted_pose)


def test_emotion_zero_is_neutral_and_intensities_matter():
    s2l = tiny_components()["speech_to_latent"]
    feats = torch.randn(1, 40, 80)
    neutral = s2l(feats).latents
    assert torch.allclose(s2l(feats, emotion=torch.zeros(1, 4)).latents, neutral)
    happy = s2l(feats, emotion=torch.tensor([[1.0, 0, 0, 0]])).latents
    half = s2l(feats, emotion=torch.tensor([[0.5, 0, 0, 0]])).latents
    assert not torch.allclose(happy, neutral) and not torch.allclose(half, happy)
    per_frame = s2l(feats, emotion=torch.tensor([[1.0, 0, 0, 0]]).expand(10, 4)[None]).latents
    assert torch.allclose(per_frame, happy, atol=1e-5)


def test_decoder_emotion_input_starts_silent_and_leaves_neutral_alone():
    from talker import DAEDecoderUNet

    plain = tiny_components()["unet"]
    config = {k: v for k, v in plain.config.items() if not k.startswith("_")}
    unet = DAEDecoderUNet(**{**config, "emotion_dim": 4}).eval()
    unet.load_state_dict(plain.state_dict(), strict=False)
    x, t, z = torch.randn(3, 3, 16, 16), torch.tensor([900, 500, 20]), torch.randn(3, 16)
    with torch.no_grad():
        base = plain(x, t, z).sample
        assert torch.equal(unet(x, t, z, emotion=torch.rand(3, 4)).sample, base)  # zero-initialised layers
        for p in unet.parameters():  # trained emotion layers: any intensities now matter, but not neutral
            p.add_(0.1 * torch.randn_like(p))
        neutral = unet(x, t, z).sample
        assert torch.equal(unet(x, t, z, emotion=torch.zeros(1, 4)).sample, neutral)
        happy = unet(x, t, z, emotion=torch.tensor([[1.0, 0, 0, 0]])).sample
        assert not torch.allclose(happy, neutral)
        assert torch.allclose(unet(x, t, z, emotion=torch.tensor([[1.0, 0, 0, 0]]).expand(3, 4)).sample, happy, atol=1e-6)
    with pytest.raises(ValueError, match="takes no emotion input"):
        plain(x, t, z, emotion=torch.zeros(1, 4))


def test_emotion_directions_move_z_sem_in_proportion_and_mix_by_adding(tmp_path):
    """With emotion_directions, intensity i moves every frame's z_sem by i × the emotion's
    direction (and nothing else): zeros are the network's neutral output, mixes add up, and
    the directions are saved with the weights."""
    plain = tiny_components()["speech_to_latent"].eval()
    config = {k: v for k, v in plain.config.items() if not k.startswith("_")}
    s2l = Speech2Latent(**{**config, "emotion_directions": True}).eval()
    s2l.load_state_dict(plain.state_dict(), strict=False)
    directions = torch.randn(4, Z_DIM)
    s2l.set_emotion_directions(directions)
    feats = torch.randn(1, 40, 80)
    neutral = plain(feats).z_sem
    assert torch.allclose(s2l(feats).z_sem, neutral) and torch.allclose(s2l(feats, emotion=torch.zeros(1, 4)).z_sem, neutral)
    for e in ([0.25, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 1.0], [0.5, 0, 0, 0.5]):
        e = torch.tensor([e])
        assert torch.allclose(s2l(feats, emotion=e).z_sem, neutral + (e @ directions)[:, None], atol=1e-5)
    s2l.save_pretrained(tmp_path / "s2l")
    assert torch.equal(Speech2Latent.from_pretrained(tmp_path / "s2l").emotion_direction, directions)
    with pytest.raises(ValueError, match="must be"):
        s2l.set_emotion_directions(torch.zeros(3, Z_DIM))
    with pytest.raises(ValueError, match="emotion_directions=False"):
        plain.set_emotion_directions(directions)


def test_statistics_are_saved_with_the_weights(tmp_path):
    s2l = tiny_components()["speech_to_latent"]
    s2l.set_statistics(latent_mean=torch.arange(Z_DIM).float(), latent_std=torch.full((Z_DIM,), 2.0),
                       feature_mean=torch.ones(80), feature_std=torch.full((80,), 3.0))
    s2l.save_pretrained(tmp_path / "s2l")
    loaded = Speech2Latent.from_pretrained(tmp_path / "s2l")
    for name in ("latent_mean", "latent_std", "feature_mean", "feature_std", "pose_mean", "pose_std"):
        assert torch.equal(getattr(loaded, name), getattr(s2l, name)), name
    feats = torch.randn(1, 20, 80)
    assert torch.allclose(loaded(feats).z_sem, s2l(feats).z_sem, atol=1e-6)


def test_configs_rebuild_the_models(tmp_path):
    for model in (tiny_components()["unet"], tiny_components()["encoder"]):
        model.save_pretrained(tmp_path / type(model).__name__)
        cls = type(model)
        loaded = cls.from_pretrained(tmp_path / cls.__name__)
        same = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        assert {k: same(v) for k, v in loaded.config.items() if not k.startswith("_")} == {
            k: same(v) for k, v in model.config.items() if not k.startswith("_")
        }
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_min_snr_loss_weights_match_diffusers_snr():
    from diffusers import DDIMScheduler
    from diffusers.training_utils import compute_snr

    from talker.training.dae import loss_weights

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    t = torch.tensor([0, 10, 100, 500, 999])
    assert torch.equal(loss_weights(sched.alphas_cumprod, t, None), torch.ones(5))
    w = loss_weights(sched.alphas_cumprod, t, 5.0)
    snr = compute_snr(sched, t)
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert w[0] < 0.01 and w[-1] == 1.0  # nearly clean steps weighed down, noisy ones kept


@pytest.mark.parametrize("voice_activity", [False, True])
def test_streaming_speech2latent_sees_no_audio_beyond_its_chunk(voice_activity):
    """With chunk_frames C, a frame's latent and pose depend on audio up to the end of its chunk
    only; the bidirectional network's frames all depend on the whole window."""
    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_heads=2, ffn_size=64, conv_kernel_size=5, num_encoder_layers=2,
              num_decoder_layers=2, latent_dim=Z_DIM, pose_predictor_channels=16, pose_predictor_kernel_size=3,
              dropout=0.0, feature_normalization="window", voice_activity=voice_activity)
    feats = torch.randn(1, 4 * 20, 80 + voice_activity)
    later = feats.clone()
    later[:, 4 * 9 :] += torch.randn_like(later[:, 4 * 9 :])  # the audio from frame 9 on changes
    streaming = Speech2Latent(chunk_frames=3, **kw).eval()
    if voice_activity:  # its projection starts at zero: give it weights so that it matters
        torch.nn.init.normal_(streaming.voice_proj[2].weight)
    a, b = streaming(feats), streaming(later)
    same = (a.z_sem - b.z_sem).abs().amax(-1)[0]
    assert same[:9].max() < 1e-5 and same[9:12].min() > 1e-3  # chunks of 3: frames 9-11 hear it
    assert torch.allclose(a.pose[:, :9], b.pose[:, :9], atol=1e-5)
    bidirectional = Speech2Latent(**kw).eval()
    assert (bidirectional(feats).z_sem - bidirectional(later).z_sem).abs().amax(-1)[0, :9].min() > 1e-3
    # its weights load into a bidirectional network of the same sizes and back (same parameter names)
    bidirectional.load_state_dict(streaming.state_dict())
    with pytest.raises(ValueError, match="chunk_frames"):
        Speech2Latent(chunk_frames=-1, **kw)


@pytest.mark.parametrize("normalization,voice_activity", [("window", True), ("dataset", False)])
def test_a_speech2latent_stream_computes_each_chunk_once_as_the_network_does(normalization, voice_activity):
    """Stepped a chunk at a time, the streaming network's state gives what its forward gives on all
    the features so far while the stream fits its memory; past the memory it keeps only that
    many frames (so each step costs the same) and its outputs move off the forward's."""
    from talker.models.speech2latent_stream import Speech2LatentStream

    torch.manual_seed(0)
    s2l = Speech2Latent(chunk_frames=3, hidden_size=32, num_heads=2, ffn_size=64, conv_kernel_size=5,
                        num_encoder_layers=2, num_decoder_layers=1, latent_dim=Z_DIM, pose_predictor_channels=16,
                        pose_predictor_kernel_size=3, dropout=0.0, feature_normalization=normalization,
                        voice_activity=voice_activity, mouth_readout=voice_activity).eval()
    if voice_activity:
        torch.nn.init.normal_(s2l.voice_proj[2].weight)
        s2l.set_mouth_readout(torch.zeros(Z_DIM), torch.randn(Z_DIM) / 4, 0.5, torch.randn(Z_DIM))
    feats = torch.randn(1, 4 * 20, 80) * 2 - 6
    if voice_activity:
        feats = torch.cat([feats, torch.rand(1, 4 * 20, 1)], -1)
    emotion = torch.tensor([[0.5, 0.0, 0.2, 0.0]])
    pose = torch.randn(1, 20, 3) * 4
    for given in (None, pose):
        full = s2l(feats, pose=given, emotion=emotion, shape_mouth=True)
        stream = Speech2LatentStream(s2l, memory_frames=20)
        steps = [stream.step(feats[:, 4 * t : 4 * min(t + 3, 20)], None if given is None else given[:, t : t + 3],
                             emotion, shape_mouth=True) for t in range(0, 20, 3)]  # the last step: 2 frames
        assert torch.allclose(torch.cat([s.z_sem for s in steps], 1), full.z_sem, atol=1e-4)
        assert torch.allclose(torch.cat([s.pose for s in steps], 1), full.pose, atol=1e-4)
    short = Speech2LatentStream(s2l, memory_frames=6)
    z = torch.cat([short.step(feats[:, 4 * t : 4 * (t + 3)], emotion=emotion, shape_mouth=True).z_sem
                   for t in range(0, 18, 3)], 1)
    full = s2l(feats[:, : 4 * 18], emotion=emotion, shape_mouth=True).z_sem
    assert all(b.keys.shape[2] == 6 for b in short.blocks) and (short.floored is None or short.floored.shape[1] < 4 * 6)
    assert torch.allclose(z[:, :6], full[:, :6], atol=1e-4)
    assert (z[:, 12:] - full[:, 12:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one chunk of at most 3 frames"):
        Speech2LatentStream(s2l, 6).step(feats[:, : 4 * 6])
    with pytest.raises(ValueError, match="streaming speech2latent"):
        Speech2LatentStream(Speech2Latent(hidden_size=32, num_heads=2, ffn_size=64).eval(), 6)
    with pytest.raises(ValueError, match="eval mode"):
        Speech2LatentStream(s2l.train(), 6)
