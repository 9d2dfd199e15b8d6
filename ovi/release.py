"""The public release as data: which hub files Ovi runs on, where each lands under ``checkpoints/``, and
what its loader expects. Everything that names a release file (``ovi-download``, the codec loaders, the
fusion checkpoint reader, the generation configs) reads it from here.

Every hub file keeps its in-repo path below one local folder per repo (``LOCAL_DIRS``), so
``Wan-AI/Wan2.2-TI2V-5B: google/umt5-xxl/`` lands in ``checkpoints/Wan2.2-TI2V-5B/google/umt5-xxl/``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Protocol, Sequence

DOWNLOAD_COMMAND = "ovi-download"  # the console script of ovi.cli.download (setup.py entry point)
DEFAULT_ROOT = "checkpoints"
# The repository checkout: files shipped in it (the toy model under checkpoints/toy, the presets) are found from
# any working directory.
REPO_ROOT = Path(__file__).resolve().parents[1]
GB = 10**9

WAN_REPO = "Wan-AI/Wan2.2-TI2V-5B"
MMAUDIO_REPO = "hkchengrex/MMAudio"
OVI_REPO = "chetwinlow1/Ovi"
FP8_REPO = "rkfg/Ovi-fp8_quantized"
# Local folder (under the checkpoint root) of each hub repo; in-repo paths are kept below it.
LOCAL_DIRS = {WAN_REPO: "Wan2.2-TI2V-5B", MMAUDIO_REPO: "MMAudio", OVI_REPO: "Ovi", FP8_REPO: "Ovi"}


@dataclass(frozen=True)
class HubFile:
    """One release file (or folder, when ``path`` ends with "/") and the format its loader expects."""

    repo: str
    path: str  # path inside the hub repo
    approx_bytes: int  # parameter count of the key manifest x bytes per element: an estimate
    format: str  # container, key naming and dtype, as the loader reads it

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def local(self) -> str:
        """Path relative to the checkpoint root (a folder keeps its trailing "/" off)."""
        return f"{LOCAL_DIRS[self.repo]}/{self.path.rstrip('/')}"

    def download_hint(self, root: str = DEFAULT_ROOT) -> str:
        return (f"Run `{DOWNLOAD_COMMAND}` to fetch it into {root}/{self.local} "
                f"(hub repo {self.repo}, file {self.path}), or pass the path of your copy.")


VIDEO_VAE = HubFile(WAN_REPO, "Wan2.2_VAE.pth", int(2.8 * GB),
                    "plain state_dict, float32, Wan key names (renamed to diffusers AutoencoderKLWan on load)")
TEXT_ENCODER = HubFile(WAN_REPO, "models_t5_umt5-xxl-enc-bf16.pth", int(11.4 * GB),
                       "plain state_dict, bfloat16, Wan T5 key names (renamed to transformers UMT5EncoderModel)")
TOKENIZER = HubFile(WAN_REPO, "google/umt5-xxl/", int(0.02 * GB),
                    "tokenizer folder read by transformers AutoTokenizer (sentencepiece model + tokenizer.json)")
AUDIO_VAE = HubFile(MMAUDIO_REPO, "ext_weights/v1-16.pth", int(0.69 * GB),
                    "plain state_dict, float32, raw (not yet normalised) MMAudio VAE weights + data_mean/data_std")
VOCODER = HubFile(MMAUDIO_REPO, "ext_weights/best_netG.pt", int(0.45 * GB),
                  "{'generator': state_dict}, float32, BigVGAN v1 with weight_g/weight_v or parametrizations names")
VOCODER_CHECKPOINT_KEY = "generator"
_FUSION_BYTES = int(23.3 * GB)  # 11.66B bfloat16
_FUSION_FORMAT = "safetensors, bfloat16, the FusionModel state_dict under its own key names"
# Released fusion files, by model variant (configs/inference/<variant>.yaml).
FUSION = {
    "720x720_5s": HubFile(OVI_REPO, "model.safetensors", _FUSION_BYTES, _FUSION_FORMAT),
    "960x960_5s": HubFile(OVI_REPO, "model_960x960.safetensors", _FUSION_BYTES, _FUSION_FORMAT),
    "960x960_10s": HubFile(OVI_REPO, "model_960x960_10s.safetensors", _FUSION_BYTES, _FUSION_FORMAT),
}
FP8_FUSION = HubFile(FP8_REPO, "model_fp8_e4m3fn.safetensors", int(11.7 * GB),
                     "safetensors, float8 e4m3fn linear weights (upcast on load), FusionModel key names")
FP8_VARIANT = "720x720_5s"  # the community fp8 file holds these weights (the reference asserts it)
# The codec files every variant needs, keyed by their CheckpointPaths field.
CODECS = {"video_vae": VIDEO_VAE, "text_encoder": TEXT_ENCODER, "tokenizer": TOKENIZER,
          "audio_vae": AUDIO_VAE, "vocoder": VOCODER}
# A tokenizer folder is usable when it holds the config and one vocabulary file (what AutoTokenizer reads).
TOKENIZER_REQUIRED = ("tokenizer_config.json",)
TOKENIZER_VOCAB_ANY_OF = ("spiece.model", "tokenizer.json")


@dataclass
class CheckpointPaths:
    """Release files, relative to ``root`` unless absolute (``ovi-download`` lays them out like this).

    An empty ``fusion`` means the released fusion file of the generation config's ``variant``.
    """

    root: str = DEFAULT_ROOT
    fusion: str = ""
    video_vae: str = VIDEO_VAE.local
    text_encoder: str = TEXT_ENCODER.local
    tokenizer: str = TOKENIZER.local
    audio_vae: str = AUDIO_VAE.local
    vocoder: str = VOCODER.local
    # Not a release file: weights trained to make sound from a clean video (objective.mode=v2a), swapped in
    # whenever a clean video is given (ovi.pass_weights; the toy ships a V2A-tuned audio tower). Empty: the fusion
    # file's own weights do it.
    v2a: str = ""

    def resolve(self, name: str, variant: str | None = None) -> Path:
        value = getattr(self, name)
        if name == "fusion" and not value:
            if variant not in FUSION:
                raise ValueError(f"checkpoints.fusion is empty and variant {variant!r} is not a released one "
                                 f"({sorted(FUSION)}): set the variant or checkpoints.fusion")
            value = FUSION[variant].local
        p = Path(value)
        if p.is_absolute():
            return p
        here = Path(self.root) / p
        # A relative root is the working directory's (where ovi-download puts the release); files shipped in the
        # repository (the toy model) are also found from elsewhere.
        shipped = REPO_ROOT / here
        return shipped if not here.exists() and not Path(self.root).is_absolute() and shipped.exists() else here


# CheckpointPaths fields that name files a generation may use but the release does not have (empty: unused).
OPTIONAL_FIELDS = ("v2a",)
V2A_WEIGHTS_HINT = "fix checkpoints.v2a, or set it empty to make the sound with the fusion file's weights"
# CheckpointPaths fields that name release files (``root`` is not one).
CHECKPOINT_FIELDS = tuple(f.name for f in fields(CheckpointPaths) if f.name not in ("root", *OPTIONAL_FIELDS))


@dataclass(frozen=True)
class ReleaseFile:
    """A hub file placed under a checkpoint root."""

    hub: HubFile
    local_path: Path

    @property
    def is_folder(self) -> bool:
        return self.hub.path.endswith("/")

    @property
    def local_dir(self) -> Path:
        """The folder that mirrors the repo root (what ``hf_hub_download(local_dir=...)`` takes)."""
        depth = len(PurePosixPath(self.hub.path).parts)
        return Path(*self.local_path.parts[:-depth])

    @property
    def target(self) -> str:
        return f"{self.local_path}/" if self.is_folder else str(self.local_path)

    def is_present(self) -> bool:
        """A file exists; a folder (the tokenizer is the only one) holds what the tokenizer loader reads."""
        if not self.is_folder:
            return self.local_path.is_file()
        p = self.local_path
        return all((p / n).is_file() for n in TOKENIZER_REQUIRED) and any(
            (p / n).is_file() for n in TOKENIZER_VOCAB_ANY_OF)


ALL_VARIANTS = "all"


def release_files(variant: str, fp8: bool = False, root: str | Path = DEFAULT_ROOT) -> list[ReleaseFile]:
    """The codec files, the fusion file(s) of ``variant`` (or ``"all"``) and, with ``fp8``, the fp8 file."""
    if variant != ALL_VARIANTS and variant not in FUSION:
        raise ValueError(f"unknown variant {variant!r}; choose one of {[*FUSION, ALL_VARIANTS]}")
    hubs = list(CODECS.values()) + [FUSION[v] for v in (FUSION if variant == ALL_VARIANTS else [variant])]
    hubs += [FP8_FUSION] if fp8 else []
    return [ReleaseFile(h, Path(root) / h.local) for h in hubs]


# --- what a generation config lacks ------------------------------------------------------------------
class _GenerationConfig(Protocol):  # the fields of ovi.config.InferenceConfig read here
    checkpoints: CheckpointPaths
    variant: str
    random_weights: bool
    v2a_weights_used: bool


def download_command(variant: str, fp8: bool = False, root: str | Path = DEFAULT_ROOT) -> str:
    cmd = f"{DOWNLOAD_COMMAND} --variant {variant}" + (" --fp8" if fp8 else "")
    return cmd if Path(root) == Path(DEFAULT_ROOT) else f"{cmd} --dir {root}"


def _match(path: Path) -> tuple[HubFile, Path] | None:
    """The hub file that ``path`` is the local copy of, and the checkpoint root it sits under."""
    for f in release_files(ALL_VARIANTS, fp8=True, root=""):
        rel = f.local_path.parts
        if path.parts[-len(rel):] == rel:
            return f.hub, Path(*path.parts[:-len(rel)])
    return None


def missing_release_files(cfg: _GenerationConfig) -> list[tuple[Path, str]]:
    """Each file ``cfg`` needs that is not on disk, with the command that fetches it (or a hint)."""
    if cfg.random_weights:
        return []  # random components need no files
    ckpt = cfg.checkpoints
    # One command should fetch everything: codec files come with the fusion file's variant.
    fusion = _match(ckpt.resolve("fusion", cfg.variant))
    fp8 = fusion is not None and fusion[0] == FP8_FUSION
    variant_of = {h: v for v, h in FUSION.items()}
    variant = FP8_VARIANT if fp8 else variant_of.get(fusion[0] if fusion else None, cfg.variant)
    variant = variant if variant in FUSION else next(iter(FUSION))
    missing = []
    for name in CHECKPOINT_FIELDS:
        path = ckpt.resolve(name, cfg.variant)
        found = _match(path)
        if found is None:
            if not path.exists():
                missing.append((path, f"not a release file: fix checkpoints.{name} in the config "
                                      f"(`{DOWNLOAD_COMMAND} --help` lists the release files)"))
            continue
        hub, root = found
        if not ReleaseFile(hub, path).is_present():
            missing.append((path, download_command(variant, fp8, root)))
    if cfg.v2a_weights_used:
        path = ckpt.resolve("v2a")
        if not path.is_file():
            missing.append((path, f"the V2A weights (checkpoints.v2a): {V2A_WEIGHTS_HINT}"))
    return missing


def format_missing(missing: Sequence[tuple[Path, str]]) -> str:
    """One message naming each missing file under the command (or hint) that provides it."""
    if not missing:
        return "all release files are present"
    groups: dict[str, list[Path]] = {}
    for path, how in missing:
        groups.setdefault(how, []).append(path)
    lines = [f"{len(missing)} release file(s) missing."]
    for how, paths in groups.items():
        lines.append(f"Run `{how}` to fetch:" if how.startswith(DOWNLOAD_COMMAND) else f"{how}:")
        lines += [f"  {p}" for p in paths]
    return "\n".join(lines)
