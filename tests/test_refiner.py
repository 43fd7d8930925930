"""The refiner: the speaker's frames at 4× the decoder's resolution, as an optional pipeline part."""

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import RES, speech_like, tiny_pipeline


def tiny_refiner(resolution: int = RES, seed: int = 0):
    from talker.models import Refiner

    torch.manual_seed(seed)
    refiner = Refiner(in_resolution=resolution, scale=4, channels=8, num_blocks=1, up_channels=8)
    torch.nn.init.normal_(refiner.tail.weight, std=0.05)  # zero-initialised: make it do something
    refiner.set_reference(torch.rand(3, resolution * 4, resolution * 4) * 2 - 1)
    return refiner.eval()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize(("h", "w", "scale"), [(64, 64, 4), (16, 24, 2), (8, 5, 8), (1, 3, 4)])
def test_the_refiners_upsampling_is_pytorchs(h, w, scale, mode):
    from talker.models.refiner import upsample

    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = upsample(x.contiguous(memory_format=torch.channels_last), scale, mode)
    theirs = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, h * scale, w * scale) and ours.dtype == torch.float32
    assert (ours - theirs).abs().max() < 1e-5


def test_refiner_shapes_patches_and_errors():
    from talker.models import Refiner

    fresh = Refiner(in_resolution=RES, scale=4, channels=8, num_blocks=1, up_channels=8)
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
        assert torch.allclose(fresh(x), bicubic, atol=1e-6)  # untrained, it is bicubic upscaling
        refiner = tiny_refiner()
        out = refiner(x)
        assert out.shape == (2, 3, RES * 4, RES * 4) and out.dtype == torch.float32
        assert out.min() >= -1 and out.max() <= 1 and not torch.allclose(out, bicubic, atol=1e-3)
        # a patch at (y, x) sees the reference there: away from its borders (where the
        # convolutions see padding instead of neighbours) it is that part of the whole frame's output
        big = tiny_refiner(48)
        x48 = torch.rand(1, 3, 48, 48) * 2 - 1
        patch = big(x48[:, :, 8:40, 4:36], region=(8, 4))
        assert patch.shape == (1, 3, 128, 128)
        inner = patch[:, :, 48:80, 48:80]
        assert torch.allclose(inner, big(x48)[:, :, 80:112, 64:96], atol=1e-5)
        assert not torch.allclose(big(x48[:, :, 8:40, 4:36], region=(0, 0))[:, :, 48:80, 48:80], inner, atol=1e-4)
        assert refiner.to(torch.bfloat16)(x).dtype == torch.float32  # frames come back as float32
    with pytest.raises(ValueError, match="frames"):
        refiner(torch.zeros(1, 3, RES * 2, RES * 2))
    with pytest.raises(ValueError, match="patches"):
        refiner(torch.zeros(1, 3, 8, 8), region=(12, 0))
    with pytest.raises(ValueError, match="reference must be"):
        refiner.set_reference(torch.zeros(3, RES, RES))
    with pytest.raises(ValueError, match="power of two"):
        Refiner(in_resolution=RES, scale=3)
    eight = Refiner(in_resolution=RES, scale=8, channels=8, num_blocks=1, up_channels=16)  # 512² from 64²
    assert eight(x).shape == (2, 3, RES * 8, RES * 8) and eight.out_resolution == RES * 8


def test_a_warping_refiner_moves_its_references_detail_to_the_frame(tmp_path):
    from talker.models import Refiner

    torch.manual_seed(0)
    refiner = Refiner(in_resolution=RES, scale=4, channels=8, num_blocks=1, up_channels=8, warp_reference=True)
    reference = torch.rand(3, RES * 4, RES * 4) * 2 - 1
    refiner.set_reference(reference)
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        out, warped = refiner(x, return_warped=True)
        assert torch.equal(warped[0], reference) and torch.equal(warped[1], reference)  # untrained: no flow
        # half the reference's high frequencies (mask 0.5) on top of bicubic upscaling
        bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        detail = reference - refiner.low_pass(reference[None])[0]
        assert torch.allclose(out, (bicubic + 0.5 * detail).clamp(-1, 1), atol=1e-5)
        # a flow of one low-resolution pixel to the right samples the reference 4 pixels on
        refiner.warp.bias[0] = 1.0
        _, moved = refiner(x, return_warped=True)
        assert torch.allclose(moved[0, :, :, :-4], reference[:, :, 4:], atol=1e-5)
        assert not torch.allclose(moved[0], reference, atol=1e-2)
        # a patch's warped reference is that part of the whole frame's
        _, part = refiner(x[:, :, 2:10, 4:12], region=(2, 4), return_warped=True)
        assert torch.allclose(part, moved[:, :, 8:40, 16:48], atol=1e-5)
        refiner.save_pretrained(tmp_path / "refiner")
        loaded = Refiner.from_pretrained(tmp_path / "refiner")
        assert loaded.config.warp_reference and torch.equal(loaded(x), refiner(x))
    with pytest.raises(ValueError, match="does not warp"):
        tiny_refiner()(x, return_warped=True)
    with pytest.raises(ValueError, match="needs use_reference"):
        Refiner(in_resolution=RES, use_reference=False, warp_reference=True)


def test_pipeline_with_a_refiner_saves_loads_and_can_skip_it(tmp_path, wav_3s):
    from talker import DAETalkerPipeline

    pipe = tiny_pipeline()
    pipe.register_modules(refiner=tiny_refiner())
    pipe.speaker = {"name": "tiny", "consent": "random weights for tests"}
    pipe.save_pretrained(tmp_path / "speaker")
    assert (tmp_path / "speaker" / "refiner" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DAETalkerPipeline.from_pretrained(tmp_path / "speaker")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.refiner is not None and loaded.output_resolution() == RES * 4 and loaded.output_resolution(False) == RES
    sd, ld = pipe.refiner.state_dict(), loaded.refiner.state_dict()
    assert sd.keys() == ld.keys() and all(torch.equal(sd[k], ld[k]) for k in sd)  # the reference frame too

    audio = speech_like(1.0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    refined = loaded(audio, sampling_rate=16000, generator=g(), num_inference_steps=2)
    raw = loaded(audio, sampling_rate=16000, generator=g(), num_inference_steps=2, refine=False)
    assert refined.frames.shape == (25, RES * 4, RES * 4, 3) and raw.frames.shape == (25, RES, RES, 3)
    assert np.array_equal(refined.latents, raw.latents)  # the same latents, rendered larger
    # the refined frames are the refiner's rendering of the raw ones
    with torch.no_grad():
        again = loaded.refiner(torch.from_numpy(raw.frames[:3]).permute(0, 3, 1, 2).float() / 127.5 - 1)
    again = ((again + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(again.astype(int) - refined.frames[:3].astype(int)).max() <= 2
    # rendering outside the pipeline's calls keeps no autograd graph (a whole clip's would fill memory)
    from talker.pipelines.dae_talker.generation import decode_latents

    settings = loaded.settings("decode", generator=g(), num_inference_steps=2)
    decoded = decode_latents(loaded, torch.from_numpy(raw.latents[:2]), settings)
    assert decoded.shape == (2, 3, RES * 4, RES * 4) and decoded.grad_fn is None and not decoded.requires_grad
    assert loaded.refiner(torch.zeros(1, 3, RES, RES)).requires_grad  # the module itself does track gradients
    assert loaded.refine_frames(torch.zeros(1, 3, RES, RES)).grad_fn is None
    streamed = np.stack(list(loaded.stream([audio[:8000], audio[8000:]], generator=g(), num_inference_steps=2)))
    assert streamed.shape == refined.frames.shape and np.abs(streamed.astype(int) - refined.frames.astype(int)).max() <= 1
    with pytest.raises(Exception, match="refine must be True or False"):
        loaded(audio, sampling_rate=16000, refine="no")
    # a video holds the refined frames (unscaled without the watermark, which needs 256 px)
    out = loaded.generate_video(wav_3s, tmp_path / "refined.mp4", num_inference_steps=1, watermark=False)
    with av.open(str(tmp_path / "refined.mp4")) as c:
        assert c.streams.video[0].codec_context.width == RES * 4 and out.frames == 75


def test_a_speaker_without_a_refiner_renders_at_its_own_size(speaker_dir):
    from talker import DAETalkerPipeline

    pipe = DAETalkerPipeline.from_pretrained(speaker_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.refiner is None and pipe.output_resolution() == RES
    out = pipe(speech_like(0.5), sampling_rate=16000, num_inference_steps=1)
    assert out.frames.shape[1:] == (RES, RES, 3)
