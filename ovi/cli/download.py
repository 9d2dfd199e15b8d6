"""``ovi-download``: fetch the public release files into the layout ``ovi.config.CheckpointPaths`` expects.

    ovi-download [--variant 960x960_10s|960x960_5s|720x720_5s|all] [--fp8] [--dir checkpoints] [--dry-run]

Every hub file keeps its in-repo path below one local folder per repo (``RELEASE_DIRS``), so
``Wan-AI/Wan2.2-TI2V-5B: google/umt5-xxl/`` lands in ``checkpoints/Wan2.2-TI2V-5B/google/umt5-xxl/``.
Files already present are skipped; ``huggingface_hub`` writes to a temporary file and renames it, so a
present file is a complete one. The generation CLI uses ``missing_release_files`` + ``format_missing``
to tell the user which command fetches what it lacks.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from ovi.checkpoints import FP8_FILE, FP8_HUB_REPO, OVI_HUB_REPO, RELEASE_FILES
from ovi.config import CheckpointPaths, InferenceConfig

PROG = "ovi-download"
WAN_REPO = "Wan-AI/Wan2.2-TI2V-5B"
MMAUDIO_REPO = "hkchengrex/MMAudio"
ALL_VARIANTS = "all"
DEFAULT_ROOT = CheckpointPaths().root
DEFAULT_VARIANT = InferenceConfig().variant
FP8_VARIANT = "720x720_5s"  # the community fp8 file holds these weights (the reference asserts it)
GB = 10**9

# --- the release, as data -------------------------------------------------------------------------
# Local folder (under --dir) of each hub repo; in-repo paths are kept below it.
RELEASE_DIRS = {WAN_REPO: "Wan2.2-TI2V-5B", MMAUDIO_REPO: "MMAudio", OVI_HUB_REPO: "Ovi", FP8_HUB_REPO: "Ovi"}
# (repo, path in repo, approximate bytes). Sizes are parameter counts of the key manifests x bytes per
# element, so they are estimates. A path ending in "/" is a folder, fetched whole.
CODEC_FILES: tuple[tuple[str, str, float], ...] = (
    (WAN_REPO, "Wan2.2_VAE.pth", 2.8 * GB),  # 705M float32
    (WAN_REPO, "models_t5_umt5-xxl-enc-bf16.pth", 11.4 * GB),  # 5.68B bfloat16
    (WAN_REPO, "google/umt5-xxl/", 0.02 * GB),  # sentencepiece model + tokenizer.json
    (MMAUDIO_REPO, "ext_weights/v1-16.pth", 0.69 * GB),  # 172M float32
    (MMAUDIO_REPO, "ext_weights/best_netG.pt", 0.45 * GB),  # 112M float32
)
FUSION_APPROX_BYTES = 23.3 * GB  # 11.66B bfloat16, each of RELEASE_FILES
FP8_APPROX_BYTES = 11.7 * GB  # 11.66B float8
# A tokenizer folder is usable when it holds the config and one vocabulary file (what AutoTokenizer reads).
TOKENIZER_REQUIRED = ("tokenizer_config.json",)
TOKENIZER_VOCAB_ANY_OF = ("spiece.model", "tokenizer.json")
# CheckpointPaths fields that name release files (``root`` is not one).
CHECKPOINT_FIELDS = ("fusion", "video_vae", "text_encoder", "tokenizer", "audio_vae", "vocoder")

# What huggingface_hub raises when a file cannot be fetched: HfHubHTTPError (gated, missing repo, HTTP
# errors) and LocalEntryNotFoundError (no connection, offline mode) are OSErrors; a missing file is
# an EntryNotFoundError. Anything else is a bug and propagates.
HUB_ERRORS: tuple[type[BaseException], ...] = (OSError, EntryNotFoundError)
# The hub is unreachable (no connection, offline mode): every further file would fail the same way,
# each after huggingface_hub's retries (~20 s), so the rest are reported without being tried.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (LocalEntryNotFoundError, ConnectionError)


@dataclass(frozen=True)
class ReleaseFile:
    repo: str
    filename_in_repo: str  # ends with "/" for a folder
    local_path: Path
    approx_bytes: int = 0

    @property
    def is_folder(self) -> bool:
        return self.filename_in_repo.endswith("/")

    @property
    def local_dir(self) -> Path:
        """The folder that mirrors the repo root (what ``hf_hub_download(local_dir=...)`` takes)."""
        depth = len(PurePosixPath(self.filename_in_repo).parts)
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


class DownloadError(RuntimeError):
    """Some release files could not be fetched; the message names them and how to place them by hand."""


def _release_file(repo: str, name: str, approx: float, root: Path) -> ReleaseFile:
    return ReleaseFile(repo, name, root / RELEASE_DIRS[repo] / PurePosixPath(name), int(approx))


def release_files(
    variant: str = DEFAULT_VARIANT, fp8: bool = False, root: str | Path = DEFAULT_ROOT
) -> list[ReleaseFile]:
    """The codec files, the fusion file(s) of ``variant`` (or ``"all"``) and, with ``fp8``, the fp8 file."""
    if variant != ALL_VARIANTS and variant not in RELEASE_FILES:
        raise ValueError(f"unknown variant {variant!r}; choose one of {[*RELEASE_FILES, ALL_VARIANTS]}")
    root = Path(root)
    files = [_release_file(repo, name, approx, root) for repo, name, approx in CODEC_FILES]
    variants = list(RELEASE_FILES) if variant == ALL_VARIANTS else [variant]
    files += [_release_file(OVI_HUB_REPO, RELEASE_FILES[v], FUSION_APPROX_BYTES, root) for v in variants]
    if fp8:
        files.append(_release_file(FP8_HUB_REPO, FP8_FILE, FP8_APPROX_BYTES, root))
    return files


# --- fetching --------------------------------------------------------------------------------------
def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1e6:.1f} MB"


def _local_bytes(f: ReleaseFile) -> int:
    if f.is_folder:
        return sum(p.stat().st_size for p in f.local_path.rglob("*") if p.is_file())
    return f.local_path.stat().st_size


def _fetch(f: ReleaseFile) -> None:
    f.local_dir.mkdir(parents=True, exist_ok=True)
    if f.is_folder:
        snapshot_download(repo_id=f.repo, allow_patterns=[f.filename_in_repo + "*"], local_dir=f.local_dir)
    else:
        hf_hub_download(repo_id=f.repo, filename=f.filename_in_repo, local_dir=f.local_dir)
    if not f.is_present():
        expected = f"{TOKENIZER_REQUIRED} and one of {TOKENIZER_VOCAB_ANY_OF}" if f.is_folder else "the file"
        # snapshot_download returns an existing local_dir as is when the hub cannot be reached.
        raise EntryNotFoundError(f"the hub call returned but {f.local_path} lacks {expected} "
                                 "(is the hub reachable? does the repo still hold this folder?)")


def _failure_message(failures: list[tuple[ReleaseFile, BaseException]]) -> str:
    by_cause: dict[str, list[ReleaseFile]] = {}
    for f, e in failures:
        text = " ".join(str(e).split()) or "(no message)"
        by_cause.setdefault(f"{type(e).__name__}: {text}", []).append(f)
    lines = [f"could not fetch {len(failures)} release file(s):"]
    for cause, files in by_cause.items():
        lines.append(f"  {cause}")
        for repo in dict.fromkeys(f.repo for f in files):
            lines.append(f"    from https://huggingface.co/{repo}")
            lines += [f"      {f.filename_in_repo}  ->  {f.target}" for f in files if f.repo == repo]
    lines += [
        "To fix: check the network (and HF_HUB_OFFLINE / HF_ENDPOINT); for a gated repo accept its licence on "
        "the repo page and run `hf auth login`; then rerun ovi-download (present files are skipped).",
        "Or place the files by hand: download each one from the repo it is listed under and put it at the path "
        "after '->' (a folder entry ending in '/' means every file of that folder).",
    ]
    return "\n".join(lines)


def download(files: Sequence[ReleaseFile], dry_run: bool = False,
             log: Callable[[str], None] = print) -> list[ReleaseFile]:
    """Fetch the files not yet present; returns those it fetched (or would, with ``dry_run``).

    One DownloadError at the end lists every file still missing; after a connection failure the
    remaining files are not tried (they are listed under the same cause).
    """
    todo = [f for f in files if not f.is_present()]
    for f in files:
        if f not in todo:
            log(f"present      {f.target}")
    total = sum(f.approx_bytes for f in todo)
    verb = "would fetch" if dry_run else "fetching"
    log(f"{verb} {len(todo)} file(s), about {_size(total)} in all (sizes approximate)")
    if dry_run:
        for f in todo:
            log(f"would fetch  {f.repo}: {f.filename_in_repo} (~{_size(f.approx_bytes)})  ->  {f.target}")
        return todo
    if todo:
        _warn_if_low_disk(todo, total, log)
    failures: list[tuple[ReleaseFile, BaseException]] = []
    for i, f in enumerate(todo):
        log(f"fetching     {f.repo}: {f.filename_in_repo} (~{_size(f.approx_bytes)})  ->  {f.target}")
        try:
            _fetch(f)
        except HUB_ERRORS as e:  # collected and re-raised below as one DownloadError
            log(f"  failed: {type(e).__name__}")
            if isinstance(e, UNREACHABLE_ERRORS):
                failures += [(g, e) for g in todo[i:]]
                break
            failures.append((f, e))
            continue
        log(f"  done, {_size(_local_bytes(f))}")
    if failures:
        raise DownloadError(_failure_message(failures))
    return todo


def _warn_if_low_disk(todo: Sequence[ReleaseFile], total: float, log: Callable[[str], None]) -> None:
    anchor = todo[0].local_dir
    while not anchor.exists():  # disk_usage needs an existing path; the target folder may not exist yet
        anchor = anchor.parent if anchor.parent != anchor else Path(".")
    free = shutil.disk_usage(anchor).free
    if free < total:
        log(f"warning: about {_size(total)} to fetch but only {_size(free)} free under {anchor.resolve()}")


# --- what a generation config lacks ------------------------------------------------------------------
def _command(variant: str, fp8: bool, root: Path) -> str:
    cmd = f"{PROG} --variant {variant}" + (" --fp8" if fp8 else "")
    return cmd if root == Path(DEFAULT_ROOT) else f"{cmd} --dir {root}"


def _match(path: Path) -> tuple[ReleaseFile, Path] | None:
    """The release file that ``path`` is the local copy of, and the --dir it sits under."""
    for f in release_files(ALL_VARIANTS, fp8=True, root=""):
        rel = f.local_path.parts
        if path.parts[-len(rel):] == rel:
            return f, Path(*path.parts[:-len(rel)])
    return None


def missing_release_files(cfg: InferenceConfig) -> list[tuple[Path, str]]:
    """Each file ``cfg`` needs that is not on disk, with the command that fetches it (or a hint)."""
    if cfg.random_weights:
        return []  # random components need no files
    ckpt = cfg.checkpoints
    # One command should fetch everything: codec files come with the fusion file's variant.
    fusion = _match(ckpt.resolve("fusion"))
    fusion_name = fusion[0].filename_in_repo if fusion else None
    variant_of = {name: v for v, name in RELEASE_FILES.items()}
    fp8 = fusion_name == FP8_FILE
    variant = FP8_VARIANT if fp8 else variant_of.get(fusion_name or "", cfg.variant)
    variant = variant if variant in RELEASE_FILES else DEFAULT_VARIANT
    missing = []
    for name in CHECKPOINT_FIELDS:
        path = ckpt.resolve(name)
        found = _match(path)
        if found is None:
            if not path.exists():
                missing.append((path, f"not a release file: fix checkpoints.{name} in the config "
                                      "(`ovi-download --help` lists the release files)"))
            continue
        f, root = found
        local = ReleaseFile(f.repo, f.filename_in_repo, path)
        if not local.is_present():
            missing.append((path, _command(variant, fp8, root)))
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
        lines.append(f"Run `{how}` to fetch:" if how.startswith(PROG) else f"{how}:")
        lines += [f"  {p}" for p in paths]
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fetch the Ovi release files (fusion model, Wan2.2 VAE, UMT5 encoder and tokenizer, MMAudio "
                    "VAE and vocoder) from the Hugging Face hub into the layout ovi-generate expects.",
    )
    p.add_argument("--variant", choices=[*RELEASE_FILES, ALL_VARIANTS], default=DEFAULT_VARIANT,
                   help=f"fusion checkpoint(s) to fetch (default {DEFAULT_VARIANT}); the codec files always come")
    p.add_argument("--fp8", action="store_true",
                   help=f"also fetch {FP8_HUB_REPO}: {FP8_FILE} (fp8 copy of the {FP8_VARIANT} weights)")
    p.add_argument("--dir", default=DEFAULT_ROOT, help=f"checkpoint folder (default {DEFAULT_ROOT})")
    p.add_argument("--dry-run", action="store_true", help="list files and targets; no network")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = release_files(args.variant, args.fp8, args.dir)
    try:
        download(files, dry_run=args.dry_run)
    except DownloadError as e:
        print(f"ovi-download: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
