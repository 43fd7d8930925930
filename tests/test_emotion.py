"""Emotion (talker add-emotion): the decoders' own emotion input trained on labelled frames
(talker.training.emotion_input), or directions fitted on a speaker's own latents or learned
through its decoder, stored in its speech2latent, shown in proportion."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Z_DIM, speech_like

from talker.errors import TalkerError


def labelled_clip(root, k, frames, rng, lowest):
    """Clip c``k`` of a prepared dataset at ``root``: its folder, with emotion.npy (one emotion per
    clip at an intensity from ``lowest`` to 1; every fifth clip neutral) and a still pose.npy;
    returns (folder, emotion)."""
    path = root / "clips" / f"c{k}"
    path.mkdir(parents=True)
    emotion = np.zeros((frames, 4), np.float32)
    if k % 5:
        emotion[:, k % 4] = rng.uniform(lowest, 1.0)
    np.save(path / "emotion.npy", emotion)
    np.save(path / "pose.npy", np.zeros((frames, 3), np.float32))
    return path, emotion


def encoded_dataset(root, directions, clips=10, frames=60, seed=0):
    """A prepared dataset whose latents move by intensity × ``directions`` (plus noise)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=Z_DIM)
    entries = []
    for k in range(clips):
        path, emotion = labelled_clip(root, k, frames, rng, 0.2)
        latents = base + emotion @ directions + 0.05 * rng.normal(size=(frames, Z_DIM))
        np.save(path / "latents.npy", latents.astype(np.float32))
        entries.append({"id": f"c{k}", "frames": frames})
    (root / "dataset.json").write_text(json.dumps({"fps": 25, "clips": entries}))
    return root


def test_directions_are_recovered_from_the_latents(tmp_path):
    from talker.training.emotion import fit_emotion_directions

    truth = np.random.default_rng(1).normal(size=(4, Z_DIM))
    fitted, record = fit_emotion_directions(encoded_dataset(tmp_path / "data", truth, clips=20), 4)
    assert fitted.shape == (4, Z_DIM) and np.abs(fitted - truth).max() < 0.1 * np.abs(truth).max()
    assert record["clips"] == 18 and record["covariates"] == []  # two clips held out; no synthetic truth
    neutral_only = encoded_dataset(tmp_path / "flat", np.zeros((4, Z_DIM)))
    for k in range(10):
        np.save(neutral_only / "clips" / f"c{k}" / "emotion.npy", np.zeros((60, 4), np.float32))
    with pytest.raises(TalkerError, match="never varies"):
        fit_emotion_directions(neutral_only, 4)


def test_add_emotion_makes_the_speaker_show_intensity_along_its_directions(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.cli import main as talker

    folder = tmp_path / "speaker"
    shutil.copytree(speaker_dir, folder)
    truth = np.random.default_rng(2).normal(size=(4, Z_DIM))
    data = encoded_dataset(tmp_path / "data", truth, clips=20)
    assert talker(["add-emotion", str(folder), "--data", str(data), "--method", "latents"]) == 0
    pipe = DAETalkerPipeline.from_pretrained(folder)
    assert pipe.speech_to_latent.config.emotion_directions
    assert json.loads((folder / "speaker.json").read_text())["emotion"]["frames"] == 18 * 60
    assert "Emotion: intensity × each emotion's direction" in (folder / "README.md").read_text()
    audio = speech_like(1.0)

    def latents(emotion):
        return pipe(audio, sampling_rate=16000, num_inference_steps=1, emotion=emotion,
                    generator=torch.Generator().manual_seed(0)).latents

    neutral = latents(None)
    direction = pipe.speech_to_latent.emotion_direction.numpy()
    assert np.allclose(latents([0, 0, 0, 0]), neutral, atol=1e-5)
    for e in ([0.5, 0, 0, 0], [0, 0, 1.0, 0], [0.5, 0, 0, 0.5]):
        assert np.allclose(latents(e) - neutral, np.asarray(e) @ direction, atol=1e-4)


def rendered_dataset(root, pipe, directions, clips=10, seconds=1.0):
    """A prepared dataset whose frames are ``pipe``'s own rendering of each clip's neutral speech
    latents moved by intensity × ``directions``: what learning through the decoder must recover."""
    import soundfile as sf

    from talker.pipelines.ddim import ddim_decode
    from talker.training.data import load_dataset
    from talker.training.emotion import speech_latents
    from talker.video import write_video

    rng = np.random.default_rng(3)
    frames = int(seconds * 25)
    entries = []
    for k in range(clips):
        path, _ = labelled_clip(root, k, frames, rng, 0.5)
        np.save(path / "latents.npy", rng.normal(size=(frames, Z_DIM)).astype(np.float32))
        sf.write(path / "audio.wav", speech_like(seconds, seed=k), 16000)
        entries.append({"id": f"c{k}", "frames": frames})
    (root / "dataset.json").write_text(json.dumps({"fps": 25, "clips": entries}))
    unet, scheduler = pipe.decoder_for(pipe.default_decoder)
    noise = torch.randn(1, 3, unet.config.sample_size, unet.config.sample_size, generator=torch.Generator().manual_seed(0))
    for clip in load_dataset(root)[1]:
        z = speech_latents(pipe, clip, 100) + torch.from_numpy(clip.emotion @ directions).float()
        with torch.no_grad():
            images = ddim_decode(unet, scheduler, z, noise, pipe.default_steps(), len(z))
        write_video(clip.path / "frames.mp4", ((images + 1) * 127.5).round().clamp(0, 255).byte()
                    .permute(0, 2, 3, 1).numpy())
    return root


def test_directions_learned_through_the_decoder_bring_its_frames_to_the_clips(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.cli import main as talker
    from talker.training.emotion import learn_emotion_directions

    folder = tmp_path / "speaker"
    shutil.copytree(speaker_dir, folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    truth = 10 * np.random.default_rng(4).normal(size=(4, Z_DIM)).astype(np.float32)
    data = rendered_dataset(tmp_path / "data", pipe, truth)
    assert talker(["add-emotion", str(folder), "--data", str(data), "--method", "decoder", "--steps", "240",
                   "--lr", "0.1"]) == 0
    record = json.loads((folder / "speaker.json").read_text())["emotion"]
    assert record["method"] == "decoder" and record["frames"] == 9 * 25
    held = record["heldout_error"]  # clip c9 (an emotion on), never trained on
    assert held["with_directions"] < held["without"], held  # a random tiny decoder: noise dominates its frames
    assert record["knots"] == 4 and not record["hold_mouth"]  # the tiny speaker reads no mouth out of z_sem
    learned = DAETalkerPipeline.from_pretrained(folder).speech_to_latent.emotion_direction.numpy()
    assert learned.shape == (4, 4, Z_DIM) and not np.allclose(learned, 0)  # offsets at 0.25, 0.5, 0.75, 1
    assert "offsets in z_sem at 4 intensities" in (folder / "README.md").read_text()
    with pytest.raises(TalkerError, match="knots must be at least 1"):
        learn_emotion_directions(pipe, data, knots=0)


def tiny_s2l(**config):
    from talker.models import Speech2Latent

    return Speech2Latent(hidden_size=32, num_heads=2, ffn_size=64, num_encoder_layers=1, num_decoder_layers=1,
                         latent_dim=8, pose_predictor_channels=16, **config).eval()


def test_offsets_at_knots_give_each_intensity_its_own_and_lines_between():
    model = tiny_s2l(emotion_directions=True, emotion_knots=4)
    table = torch.randn(4, 4, 8)  # (emotion, knot at 0.25 … 1, latent)
    model.set_emotion_directions(table)

    def offset(*e):
        return model.emotion_offset(torch.tensor(e))

    assert torch.equal(offset(0, 0, 0, 0), torch.zeros(8))  # neutral is neutral
    assert torch.allclose(offset(0.5, 0, 0, 0), table[0, 1]) and torch.allclose(offset(0, 0, 1, 0), table[2, 3])
    assert torch.allclose(offset(0.625, 0, 0, 0), (table[0, 1] + table[0, 2]) / 2)  # halfway between two knots
    assert torch.allclose(offset(0.1, 0, 0, 0), 0.4 * table[0, 0])  # from zero up to the first knot
    assert torch.allclose(offset(0.5, 0, 0, 0.25), table[0, 1] + table[3, 0])  # a mix adds
    with pytest.raises(ValueError, match=r"\(4, 4, 8\)"):
        model.set_emotion_directions(torch.randn(4, 8))
    with pytest.raises(ValueError, match="emotion_knots must be at least 1"):
        tiny_s2l(emotion_directions=True, emotion_knots=0)
    straight = tiny_s2l(emotion_directions=True)  # one knot: intensity × direction, as before
    straight.set_emotion_directions(table[:, 3])
    assert torch.allclose(straight.emotion_offset(torch.tensor([0.3, 0, 0.5, 0])), 0.3 * table[0, 3] + 0.5 * table[2, 3])


def test_offsets_held_off_the_mouth_read_out_cannot_move_the_lips():
    from talker.training.emotion import off_mouth

    model = tiny_s2l(voice_activity=True, mouth_readout=True)
    weight = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0, 0])
    model.set_mouth_readout(torch.zeros(8), weight, 0.2, torch.tensor([1.0, 0.5, 0, 0, 0, 0, 0, 0]))
    offsets = torch.randn(4, 3, 8)
    held = off_mouth(offsets, model)
    z = torch.randn(8)
    assert torch.allclose(model.mouth_open(z + held), model.mouth_open(z).expand(4, 3), atol=1e-5)
    assert not torch.allclose(model.mouth_open(z + offsets), model.mouth_open(z).expand(4, 3), atol=1e-3)
    assert torch.equal(held[..., 2:], offsets[..., 2:])  # only moved along the mouth direction


def quadrant_dataset(root, clips=10, frames=20, res=16, seed=5):
    """Labelled frames that no z_sem tells apart: a grey square whose quadrant k brightens with
    emotion k's intensity, under random latents; every fifth clip neutral."""
    from talker.video import write_video

    rng = np.random.default_rng(seed)
    entries = []
    for k in range(clips):
        path, emotion = labelled_clip(root, k, frames, rng, 0.5)
        images = np.full((frames, res, res, 3), 70.0)
        half = res // 2
        for q in range(4):
            rows, cols = slice(q // 2 * half, (q // 2 + 1) * half), slice(q % 2 * half, (q % 2 + 1) * half)
            images[:, rows, cols] += 150 * emotion[:, q, None, None, None]
        write_video(path / "frames.mp4", images.astype(np.uint8))
        np.save(path / "latents.npy", rng.normal(size=(frames, Z_DIM)).astype(np.float32))
        entries.append({"id": f"c{k}", "frames": frames})
    (root / "dataset.json").write_text(json.dumps({"fps": 25, "clips": entries}))
    return root


def test_emotion_input_shows_what_z_sem_cannot_and_leaves_neutral_as_it_was(speaker_dir, tmp_path):
    from talker import DAEDecoderUNet, DAETalkerPipeline
    from talker.cli import main as talker
    from talker.training.emotion import add_emotion

    folder = tmp_path / "speaker"
    shutil.copytree(speaker_dir, folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    distilled = DAEDecoderUNet.from_config(pipe.unet.config, prediction_type="sample")
    distilled.load_state_dict(pipe.unet.state_dict())
    pipe.register_modules(distilled_unet=distilled.eval())
    pipe.save_pretrained(folder)
    audio = speech_like(1.0)

    def frames(p, decoder, emotion):
        return p(audio, sampling_rate=16000, decoder=decoder, num_inference_steps=2, emotion=emotion,
                 generator=torch.Generator().manual_seed(0)).frames.astype(float)

    before = {(d, e): frames(pipe, d, e) for d in ("distilled", "ddim") for e in (None, (0, 0, 0, 0))}
    data = quadrant_dataset(tmp_path / "data")
    assert talker(["add-emotion", str(folder), "--data", str(data), "--method", "input", "--steps", "120",
                   "--lr", "0.01"]) == 0
    record = json.loads((folder / "speaker.json").read_text())["emotion"]
    assert record["method"] == "input" and record["frames"] == 9 * 20 and set(record["decoders"]) == {"distilled", "ddim"}
    for row in record["decoders"].values():
        first, last = row["training_loss_first_last"]
        assert last < first, row
    held = record["decoders"]["distilled"]["heldout_error"]  # clip c9 (sad), never trained on
    assert held["with_emotion_input"] < held["without"], held
    assert "an input of the decoders (distilled, ddim)" in (folder / "README.md").read_text()
    after = DAETalkerPipeline.from_pretrained(folder)
    assert after.unet.takes_emotion and after.distilled_unet.takes_emotion
    for decoder in ("distilled", "ddim"):
        for e in (None, (0, 0, 0, 0)):  # neutral renders as before
            assert np.array_equal(frames(after, decoder, e), before[decoder, e])
        assert not np.array_equal(frames(after, decoder, (1, 0, 0, 0)), before[decoder, None])
    # the distilled decoder renders the frame in one prediction: each emotion lights its own quadrant
    # most (the tiny DDIM decoder's random noise prediction leaves its frames to chance)
    for q in range(4):
        change = (frames(after, "distilled", np.eye(4)[q]) - before["distilled", None]).mean((0, 3))
        quadrants = [change[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].mean() for r in (0, 1) for c in (0, 1)]
        assert int(np.argmax(quadrants)) == q, (q, quadrants)
    with pytest.raises(TalkerError, match="take the emotion as an input"):
        add_emotion(folder, data, method="latents")
    unlabelled = quadrant_dataset(tmp_path / "unlabelled")
    for path in (unlabelled / "clips").glob("*/emotion.npy"):
        path.unlink()
    with pytest.raises(TalkerError, match="no clip has emotion labels"):
        add_emotion(folder, unlabelled, method="input")
    with pytest.raises(TalkerError, match="decoder must be one of"):
        add_emotion(folder, data, method="input", decoders=("ddpm",))


@pytest.mark.parametrize("field_scale,residual_scale", [(0.5, None), (1, None), (2, None), (2, 0.5)])
def test_expression_warp_is_linear_in_the_intensities_and_leaves_neutral_frames_alone(tmp_path, field_scale,
                                                                                       residual_scale):
    from talker.models import ExpressionWarp

    torch.manual_seed(0)
    warp = ExpressionWarp(resolution=16, channels=8, field_scale=field_scale, residual_scale=residual_scale)
    torch.nn.init.normal_(warp.head.weight, std=0.3)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    e = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    out = warp(images, e)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out[0], images[0]) and not torch.allclose(out[1], images[1], atol=1e-3)
    assert torch.equal(warp(images, torch.zeros(1, 4)), images)
    one = torch.tensor([[1.0, 0, 0, 0]]).expand(3, -1)
    flow, residual = warp.move(images, one)
    assert flow.shape[-1] == 16 * max(1, field_scale)  # fields finer than the frame for a sharper one
    half_flow, half_residual = warp.move(images, one * 0.5)
    assert torch.allclose(half_flow, flow / 2, atol=1e-6) and torch.allclose(half_residual, residual / 2, atol=1e-6)
    mixed, _ = warp.move(images, torch.tensor([[1.0, 0, 0, 1.0]]))
    alone = [warp.move(images, torch.eye(4)[[k]])[0] for k in (0, 3)]
    assert torch.allclose(mixed, alone[0] + alone[1], atol=1e-5)
    with pytest.raises(ValueError, match="takes 4 intensities"):
        warp(images, torch.ones(1, 3))
    # onto: the move read off the decoder's frames, applied to the same frames at 4× (the refiner's)
    smooth = F.interpolate(torch.rand(3, 3, 4, 4) * 2 - 1, size=16, mode="bicubic", align_corners=False)
    big = F.interpolate(smooth, scale_factor=4, mode="bicubic", align_corners=False)
    moved, small = warp(smooth, e, onto=big), warp(smooth, e)
    assert moved.shape == big.shape and torch.equal(moved[0], big[0])
    assert torch.equal(warp(smooth, torch.zeros(1, 4), onto=big), big)
    # as far across the face at 4× as at 1×: the big move, brought down, is the small one, far closer
    # than a flow left in the small frame's pixels brings it (the two differ a little where the
    # fields vary from pixel to pixel, as a random warp's at the frame's side do)
    error = (F.avg_pool2d(moved, 4) - small).abs().mean().item()
    read = warp.move

    def unscaled_move(frames, intensities):
        flow, residual = read(frames, intensities)
        return flow / 4, residual

    warp.move = unscaled_move
    unscaled = (F.avg_pool2d(warp(smooth, e, onto=big), 4) - small).abs().mean().item()
    del warp.move
    assert error < 0.5 * unscaled, (error, unscaled)
    with pytest.raises(ValueError, match="onto holds 2 frames for 3"):
        warp(images, e, onto=big[:2])
    warp.save_pretrained(tmp_path / "expression")
    assert (tmp_path / "expression" / "diffusion_pytorch_model.safetensors").is_file()
    again = ExpressionWarp.from_pretrained(tmp_path / "expression", use_safetensors=True)
    assert torch.equal(again(images, e), out)
    with pytest.raises(ValueError, match="field_scale must be one of"):
        ExpressionWarp(resolution=16, channels=8, field_scale=4)


def test_a_residual_kept_coarser_than_the_flow_is_the_fine_one_averaged_down_and_back():
    from talker.models import ExpressionWarp

    torch.manual_seed(0)
    fine = ExpressionWarp(resolution=16, channels=8, field_scale=2)
    torch.nn.init.normal_(fine.head.weight, std=0.3)
    coarse = ExpressionWarp(resolution=16, channels=8, field_scale=2, residual_scale=0.5)
    coarse.load_state_dict(fine.state_dict())
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = fine.fields(images), coarse.fields(images)
    assert torch.equal(a[:, :, :2], b[:, :, :2])  # the flow as it was, at 32²
    averaged = F.interpolate(a[:, :, 2:].flatten(0, 1), size=8, mode="area")  # the residual at 8²
    assert torch.allclose(b[:, :, 2:].flatten(0, 1), F.interpolate(averaged, size=32, mode="bilinear"), atol=1e-6)
    # a colour pattern a pixel wide, which the fine residual draws, does not come through
    stripes = (a[:, :, 2:, 1::2] - a[:, :, 2:, ::2]).abs().mean()
    assert (b[:, :, 2:, 1::2] - b[:, :, 2:, ::2]).abs().mean() < stripes / 3
    for bad in (4, 1.5):
        with pytest.raises(ValueError, match="residual_scale must be None or one of"):
            ExpressionWarp(resolution=16, channels=8, field_scale=1, residual_scale=bad)


def test_a_move_that_squeezes_the_frame_is_inverted_coarse_to_fine():
    """Above a raised brow the move squeezes the frame nearly flat (a row's move falls by almost a
    pixel per row), where each damped step gains little: started from the move inverted at half
    the side, and that from a quarter, the same steps find the inverse within a tenth of a pixel
    at 128², where as many steps from the move itself are half a pixel off."""
    from talker.models.expression import INVERSE_ITERATIONS, backward_of, sample_at

    rows = torch.arange(128).float()
    forward = torch.zeros(1, 2, 128, 128)
    forward[:, 1] = (12 * torch.exp(-(((rows - 60) / 11.5) ** 2)))[:, None]  # near row 68: 0.89 px less per row
    flow, _ = backward_of(forward, torch.zeros(1, 3, 128, 128))
    assert (flow + sample_at(forward, flow)).abs().max() < 0.1
    plain = -forward
    for _ in range(INVERSE_ITERATIONS):
        plain = 0.5 * (plain - sample_at(forward, plain))
    assert (plain + sample_at(forward, plain)).abs().max() > 0.3


def test_a_forward_flow_moves_each_point_where_the_fields_say_and_half_as_far_at_half(tmp_path):
    from talker.models import ExpressionWarp
    from talker.models.expression import backward_of, sample_at

    warp = ExpressionWarp(resolution=32, channels=8, field_scale=1, forward_flow=True)
    rows = torch.arange(32).float()
    bump = 4 * torch.exp(-(((rows - 14) / 5) ** 2))  # the frame's row r goes bump(r) rows down: steep, unlike a shift
    fields = torch.zeros(1, 4, 5, 32, 32)
    fields[:, 0, 1] = bump[:, None]

    def read(images):
        return fields.expand(images.shape[0], -1, -1, -1, -1)

    warp.fields = read
    forward = fields[:, 0, :2]
    flow, residual = backward_of(forward, torch.zeros(1, 3, 32, 32))
    # pixel p shows the frame's p + b(p) = q, so p = q + f(q): within a tenth of a pixel on a bump this steep
    assert (flow + sample_at(forward, flow)).abs().max() < 0.1
    for q in (9.0, 12.0, 17.0):  # a bright row at q lands at q + bump(q), whether the bump rises or falls there
        frame = torch.zeros(1, 3, 32, 32) - 1
        frame[:, :, int(q)] = 1
        for level in (1.0, 0.5):
            moved = warp(frame, torch.tensor([[level, 0, 0, 0]]))[0, 0, :, 16]
            weight = (moved + 1).clamp(min=0)
            landed = float((weight * rows).sum() / weight.sum())
            assert abs(landed - (q + level * float(bump[int(q)]))) < 0.25, (q, level, landed)
        backward_only = (q - float(bump[int(q)]))  # reading the forward flow as a backward one moves it the other way
        assert abs(landed - backward_only) > 1
    assert torch.equal(warp(frame, torch.zeros(1, 4)), frame)  # neutral: bit for bit
    big, _ = warp.move_at(frame, torch.tensor([[1.0, 0, 0, 0]]), (64, 64))  # at twice the side, twice the pixels
    assert abs(float(big[0, 1, 2 * 17 + 1, 32]) - 2 * float(flow[0, 1, 17, 16])) < 0.3
    del warp.fields
    warp.save_pretrained(tmp_path / "forward")
    assert ExpressionWarp.from_pretrained(tmp_path / "forward", use_safetensors=True).config.forward_flow


def test_change_weights_favour_where_each_emotion_moves_the_face_in_every_take():
    from talker.training.expression import CHANGE_CAP, change_weights

    rng = np.random.default_rng(0)
    n, res = 64, 16
    emotion = np.zeros((n, 4), np.float32)
    emotion[np.arange(n), np.arange(n) % 4] = 1.0
    neutral = rng.integers(60, 80, (n, res, res, 3)).astype(np.uint8)
    emotional = rng.integers(60, 80, (n, res, res, 3)).astype(np.uint8)  # pair by pair, they differ everywhere
    for i in range(n):  # emotion k brightens quadrant k in every one of its takes
        k = i % 4
        emotional[i, (k // 2) * 8 : (k // 2) * 8 + 8, (k % 2) * 8 : (k % 2) * 8 + 8] += 40
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, -1)  # each emotional take's crop covers the frame
    pairs = {"neutral": neutral, "emotional": emotional, "emotion": torch.from_numpy(emotion), "covered": whole}
    maps = change_weights(pairs, "neutral", "emotional", 4, 2.0)
    assert maps.shape == (4, res, res) and maps.min() >= 0 and maps.max() <= 2.0 * CHANGE_CAP
    for k in range(4):
        own = maps[k, (k // 2) * 8 + 2 : (k // 2) * 8 + 6, (k % 2) * 8 + 2 : (k % 2) * 8 + 6].mean()
        others = [maps[k, (q // 2) * 8 + 2 : (q // 2) * 8 + 6, (q % 2) * 8 + 2 : (q % 2) * 8 + 6].mean()
                  for q in range(4) if q != k]
        assert own > 5 * max(others), (k, own, others)  # the takes' pair-by-pair noise averages away
    assert torch.allclose(change_weights(pairs, "neutral", "emotional", 4, 1.0), maps / 2)
    # reframed, happy's takes repeat a bright edge along the right, where their crop did not reach:
    # the loss judges the neutral frame there (seen_or), so no weight goes to it
    edged = emotional.copy()
    happy = np.arange(n) % 4 == 0
    edged[happy, :, -3:] = 250
    short = whole.clone()
    short[happy, 2] = 13 / 16
    before = change_weights({**pairs, "emotional": edged}, "neutral", "emotional", 4, 1.0)[0]
    after = change_weights({**pairs, "emotional": edged, "covered": short}, "neutral", "emotional", 4, 1.0)[0]
    assert before[:, -2:].mean() > before[:8, :8].mean()  # the repeated edge outweighs the emotion's own change
    assert after[:, -2:].mean() < after[:8, :8].mean() / 5, (after[:, -2:].mean(), after[:8, :8].mean())


def test_a_warp_that_reads_a_larger_side_reads_the_refiners_frame_brought_to_it(tmp_path):
    from types import SimpleNamespace

    from talker.models import ExpressionWarp
    from talker.models.expression import read_at
    from talker.pipelines.dae_talker.expression import ExpressionMixin

    torch.manual_seed(0)
    warp = ExpressionWarp(resolution=16, channels=8, field_scale=1, forward_flow=True, read_side=32)
    torch.nn.init.normal_(warp.head.weight, std=0.3)
    big = F.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="bicubic", align_corners=False)  # the refiner's
    small = F.interpolate(big, size=16, mode="area")  # the decoder's
    e = torch.tensor([[1.0, 0, 0, 0.5]])
    assert torch.equal(read_at(big, 64), big)
    assert torch.allclose(read_at(big, 32), F.avg_pool2d(big, 2), atol=1e-6)
    assert torch.allclose(read_at(small, 32), F.interpolate(small, size=32, mode="bilinear", align_corners=False))
    flow, _ = warp.move(big, e)
    assert warp.read_side == 32 and flow.shape[-1] == 32  # the fields at the side it reads
    moved = warp(big, e, onto=big)
    assert torch.allclose(moved, warp(F.avg_pool2d(big, 2), e, onto=big), atol=1e-5)
    assert not torch.allclose(moved, warp(small, e, onto=big), atol=1e-3)  # the decoder's frame tells it less
    # the pipeline hands it the refiner's frame, not the decoder's
    shown = ExpressionMixin.express_frames(SimpleNamespace(expression=warp), small, e, onto=big)
    assert torch.allclose(shown, moved, atol=1e-5)
    warp.save_pretrained(tmp_path / "sharp")
    assert ExpressionWarp.from_pretrained(tmp_path / "sharp", use_safetensors=True).read_side == 32
    assert ExpressionWarp(resolution=16, channels=8).read_side == 16  # warps saved without it read the decoder's


def paired_takes(root, clips=10, frames=20, res=16, seed=5):
    """Two prepared datasets of the same lines (the same speech-like audio per clip): root/neutral,
    grey squares, and root/emotional, where quadrant k brightens with emotion k's intensity (as
    :func:`quadrant_dataset`; every fifth clip neutral there too). Returns (neutral, emotional)."""
    import soundfile as sf

    from talker.video import write_video

    emotional = quadrant_dataset(root / "emotional", clips, frames, res, seed)
    neutral = root / "neutral"
    entries = []
    for k in range(clips):
        wave = speech_like(frames / 25, seed=k)[: frames * 640]
        sf.write(emotional / "clips" / f"c{k}" / "audio.wav", wave, 16000)
        path = neutral / "clips" / f"c{k}"
        path.mkdir(parents=True)
        write_video(path / "frames.mp4", np.full((frames, res, res, 3), 70, np.uint8))
        np.save(path / "emotion.npy", np.zeros((frames, 4), np.float32))
        np.save(path / "pose.npy", np.zeros((frames, 3), np.float32))
        sf.write(path / "audio.wav", wave, 16000)
        entries.append({"id": f"c{k}", "frames": frames})
    (neutral / "dataset.json").write_text(json.dumps({"fps": 25, "clips": entries}))
    return neutral, emotional


def test_warp_learns_the_move_from_the_crops_the_takes_kept_sharp(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.training.data import load_dataset
    from talker.training.expression import decoded_takes, load_takes, paired_frames, sharp_frames, train_expression
    from talker.video import iter_frames, write_video

    pipe = DAETalkerPipeline.from_pretrained(speaker_dir)
    neutral, emotional = paired_takes(tmp_path / "takes")
    # the crops kept at 32² (talker prepare --refiner-resolution 32) show the emotion; the takes'
    # 16² frames, the ones the fields are read off, are all the neutral grey
    for root in (neutral, emotional):
        for clip in sorted((root / "clips").iterdir()):
            frames = np.stack(list(iter_frames(clip / "frames.mp4")))
            write_video(clip / "frames_32.mp4", frames.repeat(2, 1).repeat(2, 2))
            write_video(clip / "frames.mp4", np.full_like(frames, 70))
        index = json.loads((root / "dataset.json").read_text())
        (root / "dataset.json").write_text(json.dumps({**index, "refiner_resolution": 32}))
    clip = load_dataset(emotional)[1][1]
    kept = clip.frames_at(32).astype(float)
    means = (kept[:, ::2, ::2] + kept[:, 1::2, ::2] + kept[:, ::2, 1::2] + kept[:, 1::2, 1::2]) / 4
    assert np.abs(sharp_frames(clip, 32, 16) - means).max() <= 0.5  # 2×2 means, rounded
    grey, big = torch.full((1, 3, 16, 16), 70 / 127.5 - 1), torch.full((1, 3, 32, 32), 70 / 127.5 - 1)
    with pytest.raises(TalkerError, match="multiple of the decoder's side 16"):
        train_expression(pipe, [emotional], neutral, sharp_side=24, progress=False)
    moves, records = {}, {}
    for side in (32, 0):
        model, record = train_expression(pipe, [emotional], neutral, steps=300, lr=0.01, channels=8,
                                         sharp_side=side, progress=False)
        assert record["sharp_side"] == (side or None)
        records[side] = record["heldout_error"]
        with torch.no_grad():
            moves[side] = [(model(grey, torch.eye(4)[[q]], onto=big) - big)[0].mean(0) * 127.5 for q in range(4)]
    for q in range(4):
        change = moves[32][q]
        quadrants = [change[r * 16 : r * 16 + 16, c * 16 : c * 16 + 16].mean() for r in (0, 1) for c in (0, 1)]
        own = quadrants[q]
        assert own > 40 and max(abs(v) for k, v in enumerate(quadrants) if k != q) < own / 4, (q, quadrants)
        assert moves[0][q].abs().mean() < own / 4  # at the decoder's side the takes show no emotion at all
    assert records[32]["warped"] < records[32]["neutral"] / 4, records  # the held-out take (sad), judged at 32²
    # read off the speaker's decoder's rendering of the neutral takes, as at use: each pair's frame
    # is the rendering of the neutral frame it pairs
    takes = load_takes(neutral, [emotional])
    read = {c.id: c.frames // 2 + 1 for c in takes["neutral"]}
    with pytest.warns(UserWarning, match="could not be aligned"):  # flat grey frames: nothing to align by
        pairs = paired_frames(takes["neutral"], takes["emotional"], 4, takes["crops"], read=read)
    assert np.array_equal(pairs["neutral_read"], pairs["neutral"] // 2 + 1)
    decoded = decoded_takes(pipe, takes["neutral"][:1], progress=False)[takes["neutral"][0].id]
    assert decoded.shape == takes["neutral"][0].frames.shape and decoded.dtype == np.uint8
    # or that rendering through the refiner, scaled back down: what the pipeline reads them off
    with pytest.raises(TalkerError, match="no refiner"):
        decoded_takes(pipe, takes["neutral"][:1], progress=False, refined=True)
    with pytest.raises(TalkerError, match="no refiner"):  # said before any take is read
        train_expression(pipe, [emotional], tmp_path / "no-such-takes", read_from="refined", progress=False)
    from talker.models import Refiner

    torch.manual_seed(0)
    pipe.register_modules(refiner=Refiner(in_resolution=16, scale=2, channels=8, num_blocks=1, use_reference=False))
    torch.nn.init.normal_(pipe.refiner.tail.weight, std=0.05)  # zero-initialised: make it do something
    refined = decoded_takes(pipe, takes["neutral"][:1], progress=False, refined=True)[takes["neutral"][0].id]
    sharp = pipe.refine_frames(torch.from_numpy(decoded).float().permute(0, 3, 1, 2) / 127.5 - 1)
    expected = ((F.interpolate(sharp, size=(16, 16), mode="area") + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    assert refined.shape == decoded.shape and np.abs(refined - expected).max() <= 1
    assert np.abs(refined.astype(float) - decoded).mean() > 1  # the refiner changed them
    with pytest.raises(TalkerError, match="reads its fields off one of takes, decoder, refined"):
        train_expression(pipe, [emotional], neutral, read_from="truth", progress=False)
    with pytest.warns(UserWarning, match="could not be aligned"):
        model, record = train_expression(pipe, [emotional], neutral, steps=300, lr=0.01, channels=8, sharp_side=32,
                                         read_from="decoder", progress=False)
    held = record["heldout_error"]
    assert record["read_from"] == "decoder" and held["warped"] < held["neutral"] / 4, record


def test_a_warp_that_reads_the_sharp_side_learns_what_only_that_side_shows(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.training.expression import train_expression
    from talker.video import iter_frames, write_video

    pipe = DAETalkerPipeline.from_pretrained(speaker_dir)
    neutral, emotional = paired_takes(tmp_path / "takes", clips=20, frames=10)
    # kept crops at 32²: in half the lines (each emotion in some) the neutral face carries stripes a
    # pixel high (rows of 40 and 100, all 70 once brought to 16²) and the emotional take brightens
    # its quadrants as labelled; in the others neither stripes nor any change. The takes' 16² frames
    # are all the same grey.
    stripes = np.where(np.arange(32)[:, None, None] % 2 == 0, 40, 100) + np.zeros((32, 32, 3))
    for root in (neutral, emotional):
        for clip in sorted((root / "clips").iterdir()):
            frames = np.stack(list(iter_frames(clip / "frames.mp4"))).astype(float)
            lined = int(clip.name[1:]) // 4 % 2 == 1
            sharp = frames.repeat(2, 1).repeat(2, 2) if root == emotional and lined else np.full((len(frames), 32, 32, 3), 70.0)
            sharp = sharp - 70 + stripes if lined else sharp
            write_video(clip / "frames_32.mp4", sharp.clip(0, 255).astype(np.uint8), crf=0)
            write_video(clip / "frames.mp4", np.full((len(frames), 16, 16, 3), 70, np.uint8))
        index = json.loads((root / "dataset.json").read_text())
        (root / "dataset.json").write_text(json.dumps({**index, "refiner_resolution": 32}))
    with pytest.raises(TalkerError, match="the sharp side 32; got 24"):
        train_expression(pipe, [emotional], neutral, sharp_side=32, read_side=24, progress=False)
    with pytest.raises(TalkerError, match="the takes kept no larger crops"):
        train_expression(pipe, [emotional], neutral, sharp_side=0, read_side=32, progress=False)
    striped = torch.from_numpy(stripes).float().permute(2, 0, 1)[None] / 127.5 - 1
    plain = torch.full((1, 3, 32, 32), 70 / 127.5 - 1)
    shown = {}
    for read_side in (32, None):
        model, record = train_expression(pipe, [emotional], neutral, steps=300, lr=0.01, channels=8, sharp_side=32,
                                         read_side=read_side, progress=False)
        assert record["read_side"] == model.read_side == (read_side or 16)
        with torch.no_grad():  # each quadrant's brightening on a striped face and on a plain one
            shown[read_side] = [[float((model(face, torch.eye(4)[[q]], onto=face) - face)[0, :, q // 2 * 16 : q // 2 * 16 + 16,
                                                                                      q % 2 * 16 : q % 2 * 16 + 16].mean() * 127.5)
                                 for face in (striped, plain)] for q in range(4)]
    for q in range(4):
        (on_stripes, on_plain), (blind_stripes, blind_plain) = shown[32][q], shown[None][q]
        assert on_stripes > 40 and abs(on_plain) < on_stripes / 4, shown  # it tells the two faces apart
        assert abs(blind_stripes - blind_plain) < 20, shown  # read at 16² they are one grey


def test_takes_are_aligned_by_their_sound():
    from talker.training.expression import dtw_path

    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 5))
    b = np.repeat(a, 2, axis=0)[::1]  # the same line said twice as slowly
    path = dtw_path(a, b)
    assert path[0] == (0, 0) and path[-1] == (29, 59)
    assert all(i == j // 2 for i, j in path), path[:8]
    assert dtw_path(a, a) == [(k, k) for k in range(30)]


def test_takes_cut_in_other_squares_are_framed_alike():
    import cv2

    from talker.data.prepare import crop_frame
    from talker.training.expression import reframe

    picture = cv2.GaussianBlur((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8), (0, 0), 4)
    neutral_crop, emotional_crop = (30, 25, 190), (36, 31, 181)
    neutral = crop_frame(picture, neutral_crop, 64)[None].astype(int)
    emotional = crop_frame(picture, emotional_crop, 64)[None]
    framed = reframe(emotional, emotional_crop, neutral_crop)
    assert framed.dtype == np.uint8 and framed.shape == emotional.shape
    assert np.abs(framed - neutral).mean() < np.abs(emotional - neutral).mean() / 3
    assert reframe(emotional, emotional_crop, emotional_crop) is emotional
    # the strip along the left and top that the emotional crop never saw holds its edge repeated:
    # the warp's loss leaves it out, and judges the rest
    from talker.training.distill import frames_to_x0
    from talker.training.expression import coverage_mask, covered, seen_or

    box = torch.from_numpy(covered(emotional_crop, neutral_crop))[None]
    mask = coverage_mask(box, 64)[0].numpy().astype(bool)
    assert not mask[:, :2].any() and not mask[:2].any() and mask[3:-3, 3:-3].all()
    off = np.abs(framed[0].astype(int) - neutral[0]).mean(-1)
    assert off[~mask].mean() > 3 * off[mask].mean(), (off[~mask].mean(), off[mask].mean())
    target = seen_or(frames_to_x0(framed), frames_to_x0(neutral.astype(np.uint8)), box)[0].permute(1, 2, 0).numpy()
    assert np.allclose(target[~mask], frames_to_x0(neutral.astype(np.uint8))[0].permute(1, 2, 0).numpy()[~mask])
    assert np.allclose(target[mask], frames_to_x0(framed)[0].permute(1, 2, 0).numpy()[mask])
    assert coverage_mask(torch.from_numpy(covered(neutral_crop, neutral_crop))[None], 64).all()  # up to the frame's edge


def test_the_warps_loss_also_judges_the_move_at_coarser_sides():
    from talker.training.expression import pyramid_error

    rng = torch.Generator().manual_seed(0)
    out, target, w = torch.rand(2, 3, 16, 16, generator=rng), torch.rand(2, 3, 16, 16, generator=rng), torch.rand(16, 16)
    plain = ((out - target).pow(2).mean(1) * w).mean()
    assert torch.allclose(pyramid_error(out, target, w), plain)
    half = F.avg_pool2d(out, 2), F.avg_pool2d(target, 2), F.avg_pool2d(w[None, None], 2)
    coarse = ((half[0] - half[1]).pow(2).mean(1, keepdim=True) * half[2]).mean()
    assert torch.allclose(pyramid_error(out, target, w, 1), plain + coarse)
    assert torch.allclose(pyramid_error(out, target, w.expand(2, -1, -1), 1), plain + coarse)  # per-frame weights
    assert pyramid_error(out, out, w, 3) == 0


def test_takes_are_brought_to_where_the_rendering_read_off_has_the_face():
    import cv2

    from talker.training.expression import align_frames, rendering_alignment

    rng = np.random.default_rng(1)
    picture = cv2.GaussianBlur(rng.random((256, 256, 3)).astype(np.float32), (0, 0), 6)
    picture = cv2.normalize(picture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # blobs a face's size
    # the rendering: the take's face a pixel and a half over, half a pixel down and a degree turned (at 64²)
    turn = cv2.getRotationMatrix2D((127.5, 127.5), 1.0, 1.0)
    turn[:, 2] += (6.0, 2.0)
    rendered_big = cv2.warpAffine(picture, turn, (256, 256), borderMode=cv2.BORDER_REPLICATE)
    down = lambda x, side: cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA)
    take, rendered = down(picture, 64)[None], down(rendered_big, 64)[None]
    warp = rendering_alignment(np.repeat(take, 3, 0), np.repeat(rendered, 3, 0))
    assert warp.shape == (2, 3) and np.abs(warp[:, 2]).max() > 1, warp
    off = lambda a, b: np.abs(a[:, 8:-8, 8:-8].astype(float) - b[:, 8:-8, 8:-8]).mean()
    assert off(align_frames(take, warp, 64), rendered) < off(take, rendered) / 3
    # the same move at a sharper side (the takes' kept crops)
    sharp, sharp_rendered = down(picture, 128)[None], down(rendered_big, 128)[None]
    assert off(align_frames(sharp, warp, 64), sharp_rendered) < off(sharp, sharp_rendered) / 3
    # nothing to find: the take stays where it was; a flat picture gives ECC nothing to go on
    assert np.allclose(rendering_alignment(np.repeat(take, 2, 0), np.repeat(take, 2, 0)), np.eye(2, 3), atol=1e-3)
    assert rendering_alignment(np.full_like(take, 128), rendered) is None


def test_warp_shows_each_emotion_where_its_takes_do_and_leaves_neutral_as_it_was(speaker_dir, tmp_path):
    from talker import DAETalkerPipeline
    from talker.cli import main as talker
    from talker.training.emotion import add_emotion

    folder = tmp_path / "speaker"
    shutil.copytree(speaker_dir, folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    audio = speech_like(1.0)

    def frames(p, emotion):
        return p(audio, sampling_rate=16000, num_inference_steps=2, emotion=emotion,
                 generator=torch.Generator().manual_seed(0)).frames.astype(float)

    before = {e: frames(pipe, e) for e in (None, (0, 0, 0, 0))}
    neutral, emotional = paired_takes(tmp_path / "takes")
    with pytest.raises(TalkerError, match="learns from paired takes"):
        add_emotion(folder, [emotional], method="warp")
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(emotional, unlabelled)
    for path in (unlabelled / "clips").glob("*/emotion.npy"):
        path.unlink()
    with pytest.raises(TalkerError, match="has a neutral take of the same id"):
        add_emotion(folder, [unlabelled], method="warp", neutral=neutral)
    with pytest.raises(TalkerError, match="the blur and the pyramid's levels at least 0"):
        add_emotion(folder, [emotional], method="warp", neutral=neutral, max_blur=-1)
    with pytest.raises(TalkerError, match="the blur and the pyramid's levels at least 0"):
        add_emotion(folder, [emotional], method="warp", neutral=neutral, pyramid=-1)
    with pytest.raises(TalkerError, match="no larger than the field scale 1; got 2"):
        add_emotion(folder, [emotional], method="warp", neutral=neutral, residual_scale=2)
    coarser = tmp_path / "coarser"  # the loss also at coarser sides: asked for on the command line, recorded
    shutil.copytree(speaker_dir, coarser)
    assert talker(["add-emotion", str(coarser), "--data", str(emotional), "--neutral", str(neutral), "--method", "warp",
                   "--steps", "2", "--channels", "8", "--pyramid", "2"]) == 0
    coarse = json.loads((coarser / "speaker.json").read_text())["emotion"]
    assert coarse["pyramid"] == 2 and coarse["forward_flow"] is True and coarse["residual_scale"] is None  # the defaults
    # the takes are flat grey, so nothing teaches fields at the frame's side what to make of the
    # detail in the speaker's own frames (a real speaker's takes are its own face): at half side,
    # and a backward flow: a forward one carries the colour change along with it, so on takes whose
    # only change is a colour it learns to place that colour by moving, and moves the speaker's
    # detailed frames (28 grey levels off the quadrant against 81 on it)
    assert talker(["add-emotion", str(folder), "--data", str(emotional), "--neutral", str(neutral), "--method", "warp",
                   "--steps", "300", "--lr", "0.01", "--channels", "8", "--field-scale", "0.5", "--max-blur", "0.5",
                   "--no-forward-flow", "--residual-scale", "0.5"]) == 0
    record = json.loads((folder / "speaker.json").read_text())["emotion"]
    assert record["method"] == "warp" and record["takes"] == 9 and record["channels"] == 8
    assert record["field_scale"] == record["max_blur"] == record["residual_scale"] == 0.5  # as asked
    assert record["change_weight"] == 1.0 and record["pyramid"] == 0  # the defaults
    assert record["forward_flow"] is False  # as asked
    assert record["sharp_side"] is None  # the takes kept no larger crops: judged at the decoder's side
    assert record["frames"] == 7 * 20  # the emotional frames of the training takes (c0 and c5 are neutral)
    first, last = record["training_loss_first_last"]
    assert last < first, record
    held = record["heldout_error"]  # take c9 (sad), never trained on
    assert held["warped"] < held["neutral"] / 4, held
    assert "an expression warp of the decoder's frames" in (folder / "README.md").read_text()
    after = DAETalkerPipeline.from_pretrained(folder)
    assert after.expression is not None and not after.unet.takes_emotion
    for e in (None, (0, 0, 0, 0)):  # neutral renders as before
        assert np.array_equal(frames(after, e), before[e])
    latents = [after(audio, sampling_rate=16000, num_inference_steps=2, emotion=e).latents
               for e in (None, (1, 0, 0, 0))]
    assert np.array_equal(*latents)  # speech2latent is given no emotion: the warp shows it, once
    changes = {}
    for q in range(4):  # each emotion brightens its own quadrant, half as much at half the intensity
        for level in (0.5, 1.0):
            change = (frames(after, np.eye(4)[q] * level) - before[None]).mean((0, 3))
            changes[q, level] = [change[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].mean() for r in (0, 1) for c in (0, 1)]
        own, others = changes[q, 1.0][q], np.delete(changes[q, 1.0], q)
        assert own > 40 and np.abs(others).max() < own / 4, (q, changes[q, 1.0])
        assert 0.35 < changes[q, 0.5][q] / own < 0.65, (q, changes[q, 0.5][q], own)
    # with a refiner, the move is applied to the refined frames, read off them at the decoder's side
    from talker.models import Refiner

    after.register_modules(refiner=Refiner(in_resolution=16, scale=2, channels=8, num_blocks=1, use_reference=False))
    torch.nn.init.normal_(after.refiner.tail.weight, std=0.05)
    e = torch.tensor([[0.0, 1.0, 0.0, 0.5]])

    def tensors(emotion, refine):
        return after(audio, sampling_rate=16000, num_inference_steps=2, emotion=emotion, refine=refine,
                     generator=torch.Generator().manual_seed(0), output_type="pt").frames

    decoded = tensors(None, False) * 2 - 1  # neutral: the decoder's frames as they came
    sharp = after.refine_frames(decoded)
    with torch.no_grad():
        expected = (after.expression(F.interpolate(sharp, size=16, mode="area"), e, onto=sharp).clamp(-1, 1) + 1) / 2
        read_decoded = (after.expression(decoded, e, onto=sharp).clamp(-1, 1) + 1) / 2
    refined = tensors(e, True)
    assert refined.shape[-1] == 32 and torch.allclose(refined, expected, atol=1e-5)
    assert not torch.allclose(refined, read_decoded, atol=1e-3)  # not read off the decoder's softer frame
    warped_first = (after.refine_frames(after.express_frames(decoded, e)).clamp(-1, 1) + 1) / 2
    assert not torch.allclose(refined, warped_first, atol=1e-3)  # not the warp before the refiner
    with pytest.raises(TalkerError, match="already shows emotion by method warp"):
        add_emotion(folder, emotional, method="input")
    plain = tmp_path / "plain"
    shutil.copytree(speaker_dir, plain)
    add_emotion(plain, quadrant_dataset(tmp_path / "data"), method="input", steps=2)
    with pytest.raises(TalkerError, match="already shows emotion by method input"):
        add_emotion(plain, [emotional], method="warp", neutral=neutral)


def test_gap_slope_reads_how_an_emotion_reshapes_the_speech_opening():
    from talker.evaluation.metrics import gap_slope

    neutral = np.linspace(0.0, 0.3, 50)
    assert gap_slope(neutral + 0.02, neutral) == 1.0  # a parted mouth that still moves as before
    flattened = 0.5 * neutral + 0.05
    flattened[[3, 17]] = np.nan  # frames the probe could not read are left out
    assert gap_slope(flattened, neutral) == 0.5
