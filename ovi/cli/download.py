"""``ovi-download``: fetch the public release files into the layout ``ovi.release`` defines.

    ovi-download [--variant 960x960_10s|960x960_5s|720x720_5s|all] [--fp8] [--dir checkpoints] [--dry-run]

Which files, from which hub repo, to which local path: ``ovi.release`` (the one owner of the layout).
Files already present are skipped; ``huggingface_hub`` writes to a temporary file and renames it, so a
present file is a complete one.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from ovi.config import InferenceConfig
from ovi.release import (
    ALL_VARIANTS,
    DEFAULT_ROOT,
    DOWNLOAD_COMMAND,
    FP8_FUSION,
    FP8_VARIANT,
    FUSION,
    GB,
    TOKENIZER_REQUIRED,
    TOKENIZER_VOCAB_ANY_OF,
    ReleaseFile,
)
from ovi.release import release_files as _release_files

DEFAULT_VARIANT = InferenceConfig().variant

# What huggingface_hub raises when a file cannot be fetched: HfHubHTTPError (gated, missing repo, HTTP
# errors) and LocalEntryNotFoundError (no connection, offline mode) are OSErrors; a missing file is
# an EntryNotFoundError. Anything else is a bug and propagates.
HUB_ERRORS: tuple[type[BaseException], ...] = (OSError, EntryNotFoundError)
# The hub is unreachable (no connection, offline mode): every further file would fail the same way,
# each after huggingface_hub's retries (~20 s), so the rest are reported without being tried.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (LocalEntryNotFoundError, ConnectionError)


class DownloadError(RuntimeError):
    """Some release files could not be fetched; the message names them and how to place them by hand."""


def release_files(
    variant: str = DEFAULT_VARIANT, fp8: bool = False, root: str | Path = DEFAULT_ROOT
) -> list[ReleaseFile]:
    """``ovi.release.release_files`` with the generation config's default variant."""
    return _release_files(variant, fp8, root)


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
        snapshot_download(repo_id=f.hub.repo, allow_patterns=[f.hub.path + "*"], local_dir=f.local_dir)
    else:
        hf_hub_download(repo_id=f.hub.repo, filename=f.hub.path, local_dir=f.local_dir)
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
        for repo in dict.fromkeys(f.hub.repo for f in files):
            lines.append(f"    from https://huggingface.co/{repo}")
            lines += [f"      {f.hub.path}  ->  {f.target}" for f in files if f.hub.repo == repo]
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
    total = sum(f.hub.approx_bytes for f in todo)
    verb = "would fetch" if dry_run else "fetching"
    log(f"{verb} {len(todo)} file(s), about {_size(total)} in all (sizes approximate)")
    if dry_run:
        for f in todo:
            log(f"would fetch  {f.hub.repo}: {f.hub.path} (~{_size(f.hub.approx_bytes)})  ->  {f.target}")
        return todo
    if todo:
        _warn_if_low_disk(todo, total, log)
    failures: list[tuple[ReleaseFile, BaseException]] = []
    for i, f in enumerate(todo):
        log(f"fetching     {f.hub.repo}: {f.hub.path} (~{_size(f.hub.approx_bytes)})  ->  {f.target}")
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


# --- CLI -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=DOWNLOAD_COMMAND,
        description="Fetch the Ovi release files (fusion model, Wan2.2 VAE, UMT5 encoder and tokenizer, MMAudio "
                    "VAE and vocoder) from the Hugging Face hub into the layout ovi-generate expects.",
    )
    p.add_argument("--variant", choices=[*FUSION, ALL_VARIANTS], default=DEFAULT_VARIANT,
                   help=f"fusion checkpoint(s) to fetch (default {DEFAULT_VARIANT}); the codec files always come")
    p.add_argument("--fp8", action="store_true",
                   help=f"also fetch {FP8_FUSION.repo}: {FP8_FUSION.path} (fp8 copy of the {FP8_VARIANT} weights)")
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
