"""Invisible provenance watermark of generated videos, and its detector.

Every frame carries the same 48-bit payload::

    8 bits  magic 0xB5           ┐ known bits: tell a marked video from any other
    1 bit   synthetic = 1        │
    7 bits  reserved, zero       ┘
    32 bits id of the speaker checkpoint (its weights' SHA-256, first 4 bytes)

The method is the DWT-DCT watermark that SDXL ships (``invisible-watermark``) reduced to its most
robust coefficient: the DC term of the 4×4 DCT of blocks of the Haar LL band is 8 × the mean of an
8×8 block of luma, and each block mean is quantisation-index-modulated (moved onto one of two
interleaved lattices of step ``STEP`` grey levels, by at most ``STEP / 2``). Block means survive
H.264 re-encoding, rescaling and cutting; bits are spread over the frame by a fixed permutation
and every frame repeats the payload, so a decoder soft-votes over all blocks of all frames.
The change is a luma shift (R, G and B move together), at most ±STEP/2 per 8×8 block.
(``invisible-watermark`` itself is not used: it requires the GUI build ``opencv-python``, which
clashes with ``opencv-python-headless``; the arithmetic is a few lines of numpy.)

Frames must be at least ``MIN_SIDE`` pixels on each side (enough blocks for every bit to be
repeated many times in each frame); the video writer upscales smaller frames first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAGIC = 0xB5
PAYLOAD_BITS = 48
KNOWN_BITS = 16
BLOCK = 8
STEP = 4.5  # grey levels between lattice points of one bit value
MIN_SIDE = 256
DETECTION_THRESHOLD = 0.15  # mean soft agreement of the known bits (0 for unmarked content)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Payload:
    """What the watermark says: the model id and the synthetic flag."""

    model_id: int
    synthetic: bool = True

    def bits(self) -> np.ndarray:
        header = (MAGIC << 8) | (int(self.synthetic) << 7)
        value = (header << 32) | (self.model_id & 0xFFFFFFFF)
        return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.uint8)

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload:
        value = int("".join(str(int(b)) for b in bits), 2)
        return cls(model_id=value & 0xFFFFFFFF, synthetic=bool((value >> 39) & 1))

    @property
    def model_id_hex(self) -> str:
        return f"{self.model_id:08x}"


def model_id(state_dict_items) -> int:
    """32-bit id of a model: SHA-256 over its parameter names and float16 values (so it does not
    depend on the dtype the weights were loaded in)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in state_dict_items:
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:4], "big")


def _known_bits() -> np.ndarray:
    return Payload(0).bits()[:KNOWN_BITS]


def _layout(height: int, width: int) -> tuple[int, int, np.ndarray]:
    """Blocks per column and row, and the payload bit carried by each block (raster order)."""
    if min(height, width) < MIN_SIDE:
        raise InputError(f"the watermark needs frames of at least {MIN_SIDE}×{MIN_SIDE} pixels; got {width}×{height} "
                         "(upscale them first: output_size)")
    bh, bw = height // BLOCK, width // BLOCK
    order = np.random.default_rng(0x7A1C).permutation(bh * bw) % PAYLOAD_BITS
    return bh, bw, order.reshape(bh, bw)


def _block_means(luma: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """(N, H, W) → (N, bh, bw) means of the 8×8 blocks."""
    n = luma.shape[0]
    return luma[:, : bh * BLOCK, : bw * BLOCK].reshape(n, bh, BLOCK, bw, BLOCK).mean(axis=(2, 4))


def embed(frames: np.ndarray, payload: Payload) -> np.ndarray:
    """Mark uint8 RGB frames (N, H, W, 3) (or one (H, W, 3)); returns new uint8 frames."""
    frames = np.asarray(frames)
    single = frames.ndim == 3
    x = (frames[None] if single else frames).astype(np.float32)
    bh, bw, order = _layout(x.shape[1], x.shape[2])
    bits = payload.bits()[order].astype(np.float32)  # (bh, bw)
    means = _block_means(x @ _LUMA, bh, bw)
    target = (np.floor(means / STEP - 0.5 * bits) + 0.5 + 0.5 * bits) * STEP  # nearest lattice point of the bit
    target = np.where(target - means > STEP / 2, target - STEP, target)
    target = np.where(means - target > STEP / 2, target + STEP, target)
    # move every block's mean luma to its target; pixels at 0 or 255 cannot follow, so the rest
    # of the block makes up for them over a few rounds
    out = x.copy()
    region = out[:, : bh * BLOCK, : bw * BLOCK]
    for _ in range(4):
        residual = target - _block_means(region @ _LUMA, bh, bw)
        if np.abs(residual).max() < 0.05:
            break
        region += np.repeat(np.repeat(residual, BLOCK, axis=1), BLOCK, axis=2)[..., None]
        np.clip(region, 0, 255, out=region)
    out = np.round(out).astype(np.uint8)
    return out[0] if single else out


class Accumulator:
    """Soft votes for every payload bit over the frames seen so far."""

    def __init__(self):
        self.sum = np.zeros(PAYLOAD_BITS)
        self.count = np.zeros(PAYLOAD_BITS)
        self.frames = 0

    def add(self, frames: np.ndarray, luma: bool = False) -> None:
        """RGB frames (N, H, W, 3) / (H, W, 3), or with ``luma`` the Y planes (N, H, W) / (H, W)."""
        x = np.asarray(frames).astype(np.float32)
        if x.ndim == (2 if luma else 3):
            x = x[None]
        y = x if luma else x @ _LUMA
        if min(y.shape[1:3]) < MIN_SIDE:  # too small to carry the mark: no votes
            self.frames += y.shape[0]
            return
        bh, bw, order = _layout(y.shape[1], y.shape[2])
        r = (_block_means(y, bh, bw) / STEP) % 1.0  # lattice phase: 0.5 for bit 0, 0 (≡1) for bit 1
        soft = -np.cos(2 * np.pi * r)  # +1 at phase 0.5 (bit 0), -1 at phase 0 (bit 1)
        np.add.at(self.sum, order.ravel(), soft.sum(axis=0).ravel())
        np.add.at(self.count, order.ravel(), y.shape[0])
        self.frames += y.shape[0]

    def result(self) -> Detection:
        mean = self.sum / np.maximum(self.count, 1)  # > 0: bit 0
        bits = (mean < 0).astype(np.uint8)
        expected = 1.0 - 2.0 * _known_bits()  # +1 for a 0 bit
        score = float(np.mean(mean[:KNOWN_BITS] * expected))
        header_ok = bool(np.array_equal(bits[:KNOWN_BITS], _known_bits()))
        found = header_ok and score > DETECTION_THRESHOLD
        return Detection(found=found, score=score, payload=Payload.from_bits(bits) if found else None,
                         bit_confidence=np.abs(mean), bits=bits, frames=self.frames)


@dataclass
class Detection:
    """found: the known bits decode and agree strongly enough; score: their mean soft agreement
    (about 0 for unmarked video, near 1 for a clean marked one); payload: decoded when found."""

    found: bool
    score: float
    payload: Payload | None
    bit_confidence: np.ndarray
    bits: np.ndarray
    frames: int


def extract(frames: np.ndarray) -> Detection:
    acc = Accumulator()
    acc.add(frames)
    return acc.result()


def detect_video(path, max_frames: int | None = None) -> Detection:
    """Decode the watermark of a video file (any container and frame rate PyAV reads), from the
    luma plane of every frame (no colour conversion, so no clipping of saturated colours)."""
    import av

    from .errors import VideoError

    path = str(path)
    acc = Accumulator()
    batch: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream")
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if max_frames is not None and i >= max_frames:
                    break
                batch.append(frame.to_ndarray(format="gray"))
                if len(batch) == 32:
                    acc.add(np.stack(batch), luma=True)
                    batch = []
    except FileNotFoundError:
        raise VideoError(f"video file not found: {path}") from None
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None
    if batch:
        acc.add(np.stack(batch), luma=True)
    if not acc.frames:
        raise VideoError(f"{path}: the video has no frames")
    return acc.result()
