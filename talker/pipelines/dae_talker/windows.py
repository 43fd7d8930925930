"""speech2latent over long or streamed audio: overlapping windows joined by linear cross-fades.

Windows of ``window`` frames start every ``window - overlap`` frames; inside an overlap the
earlier window's weight ramps down while the later one's ramps up, so latents and poses pass
smoothly from one window to the next. A frame is final once no later window can reach it, i.e.
after the window that starts ``window - overlap`` frames before it, so a stream that has
heard ``overlap`` frames beyond a frame can emit it. Offline and streamed generation use the same
windows and produce the same latents.
"""

from __future__ import annotations

import torch

from ...errors import InputError

DEFAULT_WINDOW = 100  # frames: 4 s at 25 fps, the length speech2latent is trained on
DEFAULT_OVERLAP = 25  # frames: 1 s cross-fade, also the look-ahead of streaming
GATE_CONTEXT = 50  # frames: 2 s of audio on each side of a window that the voice gate also hears


def check_windows(window: int, overlap: int) -> None:
    for name, value in (("window_frames", window), ("overlap_frames", overlap)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer; got {value!r}")
    if window < 2:
        raise InputError(f"window_frames must be at least 2; got {window}")
    if not 0 <= overlap <= window // 2:
        raise InputError(f"overlap_frames must be between 0 and half of window_frames ({window // 2}); got {overlap}")


def runnable_windows(start: int, heard: int, ended: bool, window: int, overlap: int) -> list[tuple[int, int, bool]]:
    """The windows ``(start, end, last)`` that can run now, the first at frame ``start``: every
    window whose frames are all heard, and once the audio has ``ended`` the rest up to its last
    frame (the last one may be shorter). A window that would only cover frames the one before
    already reached is not run: those frames are final once the audio ends."""
    hop, out = window - overlap, []
    while start < heard and (start + window <= heard or ended):
        if start > 0 and ended and start + overlap >= heard:
            break  # the previous window already reached the end
        end = min(start + window, heard)
        out.append((start, end, ended and end >= heard))
        if out[-1][2]:
            break
        start += hop
    return out


def window_weights(start: int, end: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """(end - start,) cross-fade weights: ramps of ``overlap`` frames where a neighbour overlaps."""
    n = end - start
    w = torch.ones(n)
    if overlap:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        k = min(overlap, n)
        if not first:
            w[:k] = ramp[:k]
        if not last:
            w[n - k :] = torch.minimum(w[n - k :], ramp.flip(0)[overlap - k :])
    return w


class CrossFader:
    """Accumulates weighted window outputs and hands out frames once they are final."""

    def __init__(self, overlap: int):
        self.overlap = overlap
        self.offset = 0  # frame index of the first row held
        self.sum: dict[str, torch.Tensor] = {}
        self.weight = torch.zeros(0)

    def add(self, start: int, outputs: dict[str, torch.Tensor], first: bool, last: bool) -> None:
        """outputs: name → (n, ...) rows for frames start .. start + n."""
        n = next(iter(outputs.values())).shape[0]
        end = start + n
        if start < self.offset:
            raise ValueError("a window starts before frames that were already handed out")
        grow = end - self.offset - self.weight.shape[0]
        if grow > 0:
            self.weight = torch.cat([self.weight, torch.zeros(grow)])
        w = window_weights(start, end, self.overlap, first, last)
        i, j = start - self.offset, end - self.offset
        self.weight[i:j] += w
        for name, value in outputs.items():
            value = value.detach().float().cpu()
            held = self.sum.get(name)
            if held is None:
                held = torch.zeros((0, *value.shape[1:]))
            if held.shape[0] < self.weight.shape[0]:
                held = torch.cat([held, torch.zeros((self.weight.shape[0] - held.shape[0], *value.shape[1:]))])
            held[i:j] += w.view(-1, *([1] * (value.dim() - 1))) * value
            self.sum[name] = held

    def pop(self, until: int) -> dict[str, torch.Tensor]:
        """The final frames ``offset .. until`` (normalised by their summed weights)."""
        k = max(0, min(until - self.offset, self.weight.shape[0]))
        w = self.weight[:k]
        out = {name: v[:k] / w.view(-1, *([1] * (v.dim() - 1))) for name, v in self.sum.items()}
        self.sum = {name: v[k:] for name, v in self.sum.items()}
        self.weight = self.weight[k:]
        self.offset += k
        return out
