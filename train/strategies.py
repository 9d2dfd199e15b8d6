"""Training stages as small strategy objects: what the model sees, what the loss is, what a checkpoint records.

    clean latents + text --objective (sigma, noise, dropout)--> NoisedBatch
    --strategy.streams--> Stream per modality (per-token t, loss masks) --model--> velocities
    --strategy.loss--> weighted per-modality MSE over the masked tokens

The trainer calls the same three methods for every stage; nothing else in it knows which stage runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import torch
from torch import nn

from ovi.checkpoints import TrainingMetadata
from ovi.config import load_fusion_config, to_yaml
from ovi.models.stream import Stream, clean_prefix_timesteps, token_loss_mask
from ovi.models.tower import Tower
from ovi.prompts import CAPTION_PROMPT_STYLE
from train.config import AUDIO_STAGES, TrainConfig
from train.metrics import TowerFlops, tower_flops
from train.objective import NoisedBatch, combine_losses


@dataclass
class StepOutput:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # per-modality losses, detached for logging


def stream_mse(tower: Tower, pred: list[torch.Tensor], target: list[torch.Tensor], stream: Stream,
               weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Mean squared error over every trained element of every sample (token-weighted), in fp32.

    Padding never enters (the model returns each sample at its own size). With a loss mask only the masked
    tokens count: predictions and targets are cut into the tower's patches and the mask selects rows.
    ``weights``: per-token weights [num_tokens] per sample (audio onset, video motion weights), else all 1.
    """
    sq_sum = torch.zeros((), device=target[0].device)
    count = 0
    for i, (p, y) in enumerate(zip(pred, target, strict=True)):
        if p.shape != y.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(y.shape)}")
        p, y = p.float(), y.float()
        w = None if weights is None else weights[i].to(y.device)
        keep = None if stream.loss_mask is None else stream.loss_mask[i, : tower.num_tokens(y)].to(y.device)
        if keep is not None or w is not None:
            p, y = tower.patchify(p), tower.patchify(y)  # [tokens, D]
        if w is not None:  # sqrt: the weight multiplies the squared error
            root = w.sqrt()[:, None]
            p, y = p * root, y * root
        if keep is not None:
            p, y = p[keep], y[keep]
        sq_sum = sq_sum + torch.nn.functional.mse_loss(p, y, reduction="sum")
        count += y.numel()
    return sq_sum / max(count, 1)


def token_weights(tower: Tower, weights: torch.Tensor) -> torch.Tensor:
    """Per-position video weights [F, H, W] -> per-token [num_tokens]: each patch's mean, cut and ordered by
    ``Tower.patchify`` (a one-channel latent), so the token layout has one owner."""
    return tower.patchify(weights[None]).mean(dim=1)


class Strategy:
    """One training stage. ``model`` is the bare module (tower methods only need shapes)."""

    modalities: tuple[str, ...] = ()

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        self.cfg = cfg
        self.model = model

    @property
    def has_video(self) -> bool:
        return "video" in self.modalities

    def towers(self) -> dict[str, Tower]:
        raise NotImplementedError

    def streams(self, nb: NoisedBatch) -> dict[str, Stream]:
        """Model inputs per modality; clean conditioning units (the i2av image, v2a's video, a2v's audio, an
        extension's prefix) get t = 0 and no loss."""
        towers = self.towers()
        inputs = {"video": (nb.video_in, nb.video_context, nb.video_clean_frames),
                  "audio": (nb.audio_in, nb.audio_context, nb.audio_clean_latents)}
        out = {}
        for m in self.modalities:
            latents, context, clean = inputs[m]
            tower, mask = towers[m], None
            t = nb.audio_t if m == "audio" else nb.t
            if clean:
                counts = [tower.num_tokens(x) for x in latents]
                t = clean_prefix_timesteps(t, counts, [tower.tokens_per_unit(x) for x in latents], clean)
                mask = token_loss_mask(t, counts)
            if m == "audio" and nb.audio_mask is not None:  # padded short clips: one token per audio latent
                mask = nb.audio_mask if mask is None else mask & nb.audio_mask[:, : mask.shape[1]]
            out[m] = Stream(latents, t, context, loss_mask=mask)
        return out

    def forward(self, engine: nn.Module, streams: dict[str, Stream]) -> dict[str, list[torch.Tensor]]:
        raise NotImplementedError

    def loss(self, nb: NoisedBatch, streams: dict[str, Stream], preds: dict[str, list[torch.Tensor]]) -> StepOutput:
        towers = self.towers()
        targets = {"video": nb.video_target, "audio": nb.audio_target}
        # A wholly clean modality (v2a's video, a2v's audio) has no loss: the other one's is the whole loss.
        trained = [m for m in self.modalities if streams[m].loss_mask is None or bool(streams[m].loss_mask.any())]
        weights = {"audio": nb.audio_weight}
        if nb.video_weight is not None:
            weights["video"] = [token_weights(towers["video"], w) for w in nb.video_weight]
        parts = {m: stream_mse(towers[m], preds[m], targets[m], streams[m], weights.get(m)) for m in trained}
        loss = combine_losses(self.cfg.objective, parts.get("video"), parts.get("audio"))
        return StepOutput(loss, {f"loss_{m}": v.detach() for m, v in parts.items()})

    def tokens(self, nb: NoisedBatch) -> dict[str, list[int]]:
        """True token counts per modality and sample (throughput and FLOPs)."""
        towers = self.towers()
        inputs = {"video": nb.video_in, "audio": nb.audio_in}
        return {m: [towers[m].num_tokens(x) for x in inputs[m]] for m in self.modalities}

    def flops(self, tokens: dict[str, list[int]], counters: dict[str, TowerFlops]) -> float:
        """Forward + backward FLOPs of the micro-batch; each tower's cross-modal attention reads the other's tokens."""
        total = 0.0
        for m in self.modalities:
            other = "audio" if m == "video" else "video"
            for i, n in enumerate(tokens[m]):
                total += counters[m].train_flops(n, tokens[other][i] if other in tokens else 0)
        return total

    def flop_counters(self) -> dict[str, TowerFlops]:
        towers = self.towers()
        return {m: tower_flops(towers[m], towers[m].cfg) for m in self.modalities}

    def checkpoint_metadata(self) -> TrainingMetadata:
        """What an export needs to be sampled without hand overrides: the stage, the model config itself (not a
        path), and for audio-video stages the clip length and caption spelling it was trained on."""
        meta = TrainingMetadata(stage=self.cfg.stage, model_config=to_yaml(load_fusion_config(self.cfg.model)))
        if self.has_video:
            meta = replace(meta, num_frames=self.cfg.data.video.num_frames, prompt_style=CAPTION_PROMPT_STYLE)
        return meta


class AudioStage(Strategy):
    """Stage 1: the audio tower alone (pretraining on variable lengths, then fixed-length fine-tuning)."""

    modalities = ("audio",)

    def towers(self) -> dict[str, Tower]:
        return {"audio": self.model}

    def forward(self, engine: nn.Module, streams: dict[str, Stream]) -> dict[str, list[torch.Tensor]]:
        return {"audio": engine(streams["audio"])}


class FusionStage(Strategy):
    """Stage 2: both towers with the cross-modal layers; one shared sigma, 0.85 video + 0.15 audio.

    ``objective.mode: t2a`` trains the fusion model's audio tower alone (no video stream, no cross-modal
    attention); the other modes choose which tokens are clean conditioning (``FlowMatchingObjective``)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        super().__init__(cfg, model)
        self.modalities = ("audio",) if cfg.objective.mode == "t2a" else ("video", "audio")

    def towers(self) -> dict[str, Tower]:
        return {"video": self.model.video_model, "audio": self.model.audio_model}

    def forward(self, engine: nn.Module, streams: dict[str, Stream]) -> dict[str, list[torch.Tensor]]:
        video, audio = engine(streams.get("video"), streams["audio"])
        return {"video": video, "audio": audio} if video is not None else {"audio": audio}


def strategy_for(cfg: TrainConfig, model: nn.Module) -> Strategy:
    return AudioStage(cfg, model) if cfg.stage in AUDIO_STAGES else FusionStage(cfg, model)

