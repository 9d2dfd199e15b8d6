"""Ulysses sequence parallelism on CPU/gloo: 2 processes split one clip; forward, sampling and gradients equal
the single-process model at the exact-math tier (fp32 rel_l2 <= 1e-5), with odd token counts and padding."""
from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import rel_l2
from ovi.config import load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig, denoise
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream, clean_prefix_timesteps
from ovi.parallel.groups import ParallelLayout, sequence_parallel_layout
from ovi.parallel.ulysses import SequenceShard, apply_sequence_parallel, remove_sequence_parallel

pytestmark = pytest.mark.multiprocess
TOL = 1e-5  # the exact-math tier (float32)
TINY = os.path.join(os.path.dirname(__file__), "..", "configs/model/tiny.yaml")


def random_model(seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    model = FusionModel(load_fusion_config(TINY))
    with torch.no_grad():  # the reference init zeroes the heads: a zero output would compare trivially
        for p in model.parameters():
            p.normal_(std=0.05)
    return model.eval()


def inputs(model: FusionModel) -> tuple[Stream, Stream]:
    """Two samples of different sizes (padding), odd token counts (3*5*3=45 and 2*5*3=30 video; 13, 9 audio),
    per-token video timesteps with a clean first frame (i2v) and different text lengths."""
    g = torch.Generator().manual_seed(1)
    vm = model.video_model
    video = [torch.randn(48, 3, 10, 6, generator=g), torch.randn(48, 2, 10, 6, generator=g)]
    audio = [torch.randn(13, 20, generator=g), torch.randn(9, 20, generator=g)]
    text = [torch.randn(7, 4096, generator=g), torch.randn(11, 4096, generator=g)]
    t = torch.tensor([700.0, 300.0])
    t_v = clean_prefix_timesteps(t, [vm.num_tokens(u) for u in video], [vm.tokens_per_unit(u) for u in video], 1)
    return Stream(video, t_v, text), Stream(audio, t, text)


def _loss(out_v: list[torch.Tensor], out_a: list[torch.Tensor]) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return sum((u * torch.randn(u.shape, generator=g)).sum() for u in out_v + out_a)  # type: ignore[return-value]


@contextlib.contextmanager
def saved_bytes(model: torch.nn.Module):
    """Bytes of the tensors autograd saves for backward except the weights (the activations), each storage once."""
    seen: dict[int, int] = {p.untyped_storage().data_ptr(): 0 for p in model.parameters()}
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen[key] = t.untyped_storage().nbytes()
            total[0] += seen[key]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = random_model()
        video, audio = inputs(model)
        # Single-process reference, computed in this process before the split.
        with saved_bytes(model) as ref_mem:
            ref_v, ref_a = model(video, audio, slg_layer=1, slg_rows=[1])
        _loss(ref_v, ref_a).backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        text = Conditioning(*video.context[:1], video.context[1], audio.context[1])
        torch.manual_seed(3)
        noise_v, noise_a = torch.randn(48, 3, 10, 6), torch.randn(13, 20)
        guide = GuidanceConfig(num_steps=3, slg_layer=1)
        with torch.no_grad():
            ref_sample = denoise(model, noise_v, noise_a, text, guide, progress=False)

        layout = sequence_parallel_layout(world)
        apply_sequence_parallel(model, layout)
        with saved_bytes(model) as sp_mem:
            out_v, out_a = model(video, audio, slg_layer=1, slg_rows=[1])
        _loss(out_v, out_a).backward()
        rel_fwd = max(rel_l2(o.detach(), r.detach()) for o, r in zip(out_v + out_a, ref_v + ref_a))
        # DeepSpeed averages gradients over all ranks (here the SP group is the whole world, one DP group).
        # Compared as the whole gradient vector (what the optimizer and clipping see): a few parameters' own
        # gradients are near zero by cancellation (k biases under softmax), so their own rel_l2 is rounding noise.
        grads = []
        for p in model.parameters():
            dist.all_reduce(p.grad)
            grads.append(p.grad.flatten() / world)
        rel_grad = rel_l2(torch.cat(grads), torch.cat([g.flatten() for g in ref_grads.values()]))
        with torch.no_grad():
            sp_sample = denoise(model, noise_v, noise_a, text, guide, progress=False)
        rel_sample = max(rel_l2(a, b) for a, b in zip(sp_sample, ref_sample))
        remove_sequence_parallel(model)
        with torch.no_grad():
            back = model(video, audio)
        results[rank] = {"forward": rel_fwd, "grad": rel_grad, "sample": rel_sample,
                         "activations": sp_mem[0] / ref_mem[0], "removed": all(o.shape == r.shape for o, r in zip(back[0], ref_v))}
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(world: int) -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world, _free_port(), results), nprocs=world, join=True)
        return dict(results)


def test_two_ranks_forward_gradients_and_sampling_equal_one_process():
    results = run_workers(2)
    assert sorted(results) == [0, 1]
    for rank, r in results.items():
        assert r["forward"] <= TOL, f"rank {rank}: forward rel_l2 {r['forward']:.3g}"
        assert r["grad"] <= TOL, f"rank {rank}: gradient rel_l2 {r['grad']:.3g}"
        assert r["sample"] <= TOL, f"rank {rank}: 3-step CFG+SLG sample rel_l2 {r['sample']:.3g}"
        assert r["removed"]
        # Weights' gradients aside, what each rank keeps for backward: the split blocks' activations halve;
        # the embeddings, time MLP and text MLP are computed whole on every rank.
        assert r["activations"] < 0.75, f"rank {rank}: activations {r['activations']:.2f} x the unsplit model's"


@pytest.mark.slow
def test_four_ranks_forward_gradients_and_sampling_equal_one_process():
    for rank, r in run_workers(4).items():
        assert max(r["forward"], r["grad"], r["sample"]) <= TOL, f"rank {rank}: {r}"


def test_shard_pads_to_a_multiple_of_the_group_and_masks_the_padding():
    class FakeGroup(ParallelLayout):
        pass

    model = random_model()
    video, _ = inputs(model)
    tok = model.video_model.embed(Stream(video.latents[:1], video.t[:1], video.context[:1]))  # 45 tokens, no padding
    assert tok.seq_lens is None
    parts = [SequenceShard(FakeGroup(rank=r, world_size=4, sp_size=4)).shard(tok) for r in range(4)]
    assert [p.x.shape[1] for p in parts] == [12] * 4  # 45 -> 48 = 4 x 12
    assert torch.equal(torch.cat([p.x for p in parts], 1)[:, :45], tok.x)
    assert all(p.seq_lens.tolist() == [45] for p in parts)  # the 3 SP padding keys are masked
    assert torch.equal(parts[3].rope.cos[:, -3:], torch.ones_like(parts[3].rope.cos[:, -3:]))  # identity rotation
    assert torch.equal(torch.cat([p.e0 for p in parts], 1)[:, :45], tok.e0)  # per-token timesteps follow


def test_heads_must_divide_by_the_group_size():
    model = random_model()
    with pytest.raises(ValueError, match="must divide"):
        apply_sequence_parallel(model, ParallelLayout(0, 3, 3, sp_group=object()))
    with pytest.raises(ValueError, match="must divide the number of processes"):
        ParallelLayout(0, 4, 3)
