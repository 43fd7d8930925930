"""CUDA graphs for live input: a network run as one recorded graph instead of hundreds of kernel
launches. Live input decodes a chunk of 3 frames at a time; at that size a GPU is idle most of
the time between the launches that Python issues one by one (on an H200 the bundled speaker's
decoder took ~28 ms and the refiner ~6 ms a chunk, bench/results/live_h200.json). A graph records
the launches once per input shape and replays them with one call.

:class:`GraphedCall` wraps a function of tensors; inputs are copied into the graph's own buffers
and the output is copied out. On a CPU, under autograd, or where recording fails (an operation a
graph cannot hold), it runs the function as it is: the frames are the same either way, so a
failure costs speed only, and is logged once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

WARMUP_RUNS = 2  # runs on a side stream before recording (PyTorch's advice: lazy initialisation)


class GraphedCall:
    """``fn(*tensors) -> tensor``, replayed from a CUDA graph recorded for each input signature
    (shapes, types, autocast type); ``graphs`` counts those recorded, ``failed`` says why
    recording was given up (None while it works)."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.failed: str | None = None

    @property
    def graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self.failed is not None or not tensors[0].is_cuda or torch.is_grad_enabled():
            return self.fn(*tensors)
        autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        key = (autocast, *((tuple(t.shape), t.dtype, t.device) for t in tensors))
        if key not in self._graphs:
            try:
                self._graphs[key] = self._record(tensors, autocast)
            except Exception as error:  # any operation a graph cannot hold: run as it is from now on
                self.failed = f"{type(error).__name__}: {error}"
                logger.warning("CUDA graph recording failed, running without graphs: %s", self.failed)
                return self.fn(*tensors)
        graph, inputs, output = self._graphs[key]
        for buffer, value in zip(inputs, tensors, strict=True):
            buffer.copy_(value)
        graph.replay()
        return output.clone()

    def _record(self, tensors, autocast):
        inputs = tuple(t.clone() for t in tensors)
        # autocast's cache of cast weights would be freed when its context ends, under the graph
        def casting():
            return torch.autocast("cuda", dtype=autocast, cache_enabled=False) if autocast else contextlib.nullcontext()

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), casting():
            for _ in range(WARMUP_RUNS):
                self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a server's other sessions keep launching on their threads while this records
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), casting():
            output = self.fn(*inputs)
        return graph, inputs, output


class GraphedDecoder(torch.nn.Module):
    """A decoder UNet whose calls ``(sample, timestep, z_sem, emotion=...)`` replay CUDA graphs;
    it answers like the UNet where :func:`~talker.pipelines.ddim.ddim_decode` asks (``.sample``,
    its parameters, ``takes_emotion``)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.takes_emotion = getattr(unet, "takes_emotion", False)
        self.call = GraphedCall(self._run)

    def _run(self, sample, timestep, z_sem, *emotion):
        return self.unet(sample, timestep, z_sem, emotion=emotion[0] if emotion else None).sample

    def forward(self, sample, timestep, z_sem, emotion=None):
        timestep = torch.as_tensor(timestep, device=sample.device)
        return SimpleNamespace(sample=self.call(sample, timestep, z_sem, *(() if emotion is None else (emotion,))))
