"""The bundled speaker's output for a fixed audio and seed, against frames stored from an earlier
version of the code: restructuring the code must not change what it makes.

``python tests/test_reference_output.py`` rewrites the reference (only after a change that is
meant to change the output, and say so in the commit)."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).with_name("data") / "bundled_speaker_reference.safetensors"
AUDIO = ROOT / "examples" / "recorded_voice.wav"
SECONDS = 0.4  # 10 frames
SEED = 0
# float32 on any CPU: the same code gives the same numbers up to the order of float sums, which
# differs between CPU kernels and thread counts. Measured against the reference made with AVX2
# kernels on 2 threads: no SIMD (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41) differs by
# up to 1.4e-6 (frames in [0, 1]), 1 thread by up to 1.1e-6. A change of the method moves them by
# far more (seed 1 instead of 0: frames by up to 0.11).
TOLERANCE = 1e-5


def bundled_outputs() -> dict[str, torch.Tensor]:
    """z_sem, poses and frames of the bundled speaker: the decoder's frames and the refined ones,
    for the first ``SECONDS`` of ``examples/recorded_voice.wav``, seed 0, float32."""
    import soundfile as sf

    from talker import DAETalkerPipeline

    pipe = DAETalkerPipeline.from_pretrained(ROOT / "checkpoints" / "astronaut-64")
    pipe.precision = "float32"  # bfloat16 autocast would make the figures depend on the CPU
    pipe.set_progress_bar_config(disable=True)
    wave, rate = sf.read(AUDIO, dtype="float32")
    wave = wave[: int(SECONDS * rate)]
    out = {}
    for refine in (False, True):
        result = pipe(wave, sampling_rate=rate, generator=torch.Generator().manual_seed(SEED), output_type="pt",
                      refine=refine)
        out["refined" if refine else "decoded"] = result.frames.float().contiguous()
        out["z_sem"], out["pose"] = result.latents.float().contiguous(), result.poses.float().contiguous()
    out["refined"] = out["refined"][:2].contiguous()  # two 256² frames keep the file small
    return out


def test_the_bundled_speaker_makes_the_stored_frames():
    from safetensors.torch import load_file

    torch.set_num_threads(2)
    stored = load_file(REFERENCE)
    made = bundled_outputs()
    assert set(made) == set(stored)
    for name, value in stored.items():
        assert made[name].shape == value.shape, name
        diff = (made[name] - value).abs().max().item()
        assert diff <= TOLERANCE, f"{name} differs from the stored reference by up to {diff:.3g}"


if __name__ == "__main__":
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    save_file(bundled_outputs(), REFERENCE)
    print(f"wrote {REFERENCE}")
