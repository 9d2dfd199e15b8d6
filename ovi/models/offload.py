"""Block streaming offload: the fusion blocks live in (pinned) CPU memory and visit the GPU in turn.

The small parts of the model (patch/text/time embeddings, heads: ~3% of the 11B release) stay on the
compute device; of the fusion blocks (each the video + audio block of one depth, ~370M parameters, 0.74 GB
in bf16) only ``resident`` are on the device at a time. Entering block i waits for its copy, then starts
copying the next ones on a side CUDA stream, so the transfer of block i+1 overlaps the compute of block i;
leaving block i frees it unless it is in the next window. Peak weight memory: the small parts plus
``resident`` blocks (+1 in flight).

On the CPU (tests, and a model that is already there) "loading" attaches the host tensors and "evicting"
detaches them, so the bookkeeping and the outputs are checked without a GPU.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ovi.models.fusion import BlockResidency, FusionModel


class BlockStreamer(BlockResidency):
    """Keeps ``resident`` fusion blocks of ``model`` on ``device``; install with :func:`stream_blocks`."""

    def __init__(self, model: FusionModel, device: torch.device, resident: int = 2) -> None:
        if resident < 1:
            raise ValueError(f"offload_blocks must be >= 1 resident block, got {resident}")
        self.device = torch.device(device)
        blocks = list(zip(model.video_model.blocks, model.audio_model.blocks))
        self.num_blocks = len(blocks)
        self.resident = min(resident, self.num_blocks)
        self.params: list[list[nn.Parameter]] = [
            [p for pair in unit for p in pair.parameters()] for unit in blocks
        ]
        pin = self.device.type == "cuda"
        self.host: list[list[torch.Tensor]] = [
            [(p.data.pin_memory() if pin else p.data) for p in unit] for unit in self.params
        ]
        self.on_device: dict[int, torch.cuda.Event | None] = {}  # block -> copy-done event (None on CPU)
        self.side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        for i in range(self.num_blocks):
            self._detach(i)
        self.peak_resident = 0

    def window(self, i: int) -> list[int]:
        """Blocks that should be on the device while block i runs: i and the next ``resident - 1``."""
        return [(i + k) % self.num_blocks for k in range(self.resident)]

    @contextlib.contextmanager
    def block(self, i: int) -> Iterator[None]:
        for j in self.window(i):
            self._load(j)
        self._wait(i)
        self.peak_resident = max(self.peak_resident, len(self.on_device))
        try:
            yield
        finally:
            if i not in self.window(i + 1):
                self._evict(i)

    def _load(self, i: int) -> None:
        if i in self.on_device:
            return
        if self.side is None:
            for p, h in zip(self.params[i], self.host[i]):
                p.data = h
            self.on_device[i] = None
            return
        self.side.wait_stream(torch.cuda.current_stream(self.device))  # evicted memory is free to reuse
        with torch.cuda.stream(self.side):
            for p, h in zip(self.params[i], self.host[i]):
                p.data = h.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.side)
        self.on_device[i] = event

    def _wait(self, i: int) -> None:
        event = self.on_device[i]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            for p in self.params[i]:
                p.data.record_stream(torch.cuda.current_stream(self.device))  # allocated on the side stream

    def _evict(self, i: int) -> None:
        self.on_device.pop(i, None)
        self._detach(i)

    def _detach(self, i: int) -> None:
        for p, h in zip(self.params[i], self.host[i]):
            p.data = torch.empty(0, dtype=h.dtype, device=self.device)

    def resident_blocks(self) -> list[int]:
        return sorted(self.on_device)


def stream_blocks(model: FusionModel, device: torch.device | str, resident: int = 2) -> BlockStreamer:
    """Move everything but the fusion blocks to ``device`` and stream the blocks (see the module docstring)."""
    device = torch.device(device)
    for tower in (model.video_model, model.audio_model):
        for name, child in tower.named_children():
            if name != "blocks":
                child.to(device)
    streamer = BlockStreamer(model, device, resident)
    model.video_model.block_residency = model.audio_model.block_residency = streamer
    return streamer
