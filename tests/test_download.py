"""ovi-download: targets per variant, the layout CheckpointPaths expects, idempotence, offline errors."""
from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path

import pytest
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled

import ovi.cli.download as dl
from ovi.config import CheckpointPaths, InferenceConfig, load_config
from ovi.release import CHECKPOINT_FIELDS, FP8_FUSION, FUSION, format_missing, missing_release_files

FP8_FILE = FP8_FUSION.name
REPO = Path(__file__).resolve().parents[1]

CODEC_TARGETS = [
    "Wan2.2-TI2V-5B/Wan2.2_VAE.pth",
    "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth",
    "Wan2.2-TI2V-5B/google/umt5-xxl/",
    "MMAudio/ext_weights/v1-16.pth",
    "MMAudio/ext_weights/best_netG.pt",
]
TOKENIZER_FILES = ["tokenizer_config.json", "special_tokens_map.json", "spiece.model", "tokenizer.json"]


def _would_fetch(out: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith("would fetch ") and "->" in line]
    return [line.rsplit("->", 1)[1].strip() for line in lines]


@pytest.mark.parametrize("variant, fp8, fusion", [
    ("960x960_10s", False, ["model_960x960_10s.safetensors"]),
    ("720x720_5s", True, ["model.safetensors", FP8_FILE]),
    ("all", False, sorted(h.name for h in FUSION.values())),
])
def test_dry_run_lists_targets_per_variant(tmp_path, capsys, monkeypatch, variant, fp8, fusion) -> None:
    def no_network(*a, **k):
        raise AssertionError("--dry-run must not touch the network")
    monkeypatch.setattr(dl, "hf_hub_download", no_network)
    monkeypatch.setattr(dl, "snapshot_download", no_network)
    argv = ["--dry-run", "--dir", str(tmp_path), "--variant", variant] + (["--fp8"] if fp8 else [])
    assert dl.main(argv) == 0
    want = [f"{tmp_path}/{t}" for t in CODEC_TARGETS] + [f"{tmp_path}/Ovi/{f}" for f in fusion]
    assert sorted(_would_fetch(capsys.readouterr().out)) == sorted(want)
    assert not any(tmp_path.iterdir())  # nothing written


def test_default_variant_matches_checkpoint_paths_layout() -> None:
    """Every file the default config needs is one the default download places, at the same path."""
    cfg = InferenceConfig()
    targets = {f.local_path for f in dl.release_files()}
    assert {cfg.checkpoints.resolve(n, cfg.variant) for n in CHECKPOINT_FIELDS} == targets
    with pytest.raises(ValueError, match="unknown variant"):
        dl.release_files("1080p")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A hub folder holding every release file; the hub calls copy from it and record what they fetched."""
    hub = tmp_path / "hub"
    for f in dl.release_files(dl.ALL_VARIANTS, fp8=True, root=""):
        names = [f.hub.path + n for n in TOKENIZER_FILES] if f.is_folder else [f.hub.path]
        for name in names:
            src = hub / f.hub.repo / name
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(f"{f.hub.repo}:{name}")
    calls: list[str] = []

    def fake_file(repo_id: str, filename: str, local_dir: Path, **_) -> str:
        calls.append(f"{repo_id}:{filename}")
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        return shutil.copyfile(hub / repo_id / filename, dst)

    def fake_snapshot(repo_id: str, allow_patterns: list[str], local_dir: Path, **_) -> str:
        calls.append(f"{repo_id}:{allow_patterns}")
        for src in (hub / repo_id).rglob("*"):
            rel = src.relative_to(hub / repo_id).as_posix()
            if src.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                fake_file(repo_id, rel, local_dir)
        return str(local_dir)

    monkeypatch.setattr(dl, "hf_hub_download", fake_file)
    monkeypatch.setattr(dl, "snapshot_download", fake_snapshot)
    return calls


def test_fetch_lays_out_files_and_is_idempotent(tmp_path, fake_hub, capsys) -> None:
    root = tmp_path / "ckpt"
    cfg = InferenceConfig(checkpoints=CheckpointPaths(root=str(root)))
    assert len(missing_release_files(cfg)) == len(CHECKPOINT_FIELDS)
    assert dl.main(["--dir", str(root)]) == 0
    assert missing_release_files(cfg) == []  # the generation config finds everything
    assert (root / "Ovi/model_960x960_10s.safetensors").read_text() == "chetwinlow1/Ovi:model_960x960_10s.safetensors"
    assert sorted(p.name for p in (root / "Wan2.2-TI2V-5B/google/umt5-xxl").iterdir()) == sorted(TOKENIZER_FILES)
    assert not (root / "Ovi/model.safetensors").exists()  # other variants are not fetched
    assert "fetching 6 file(s)" in capsys.readouterr().out

    fake_hub.clear()
    assert dl.main(["--dir", str(root)]) == 0
    assert fake_hub == []  # second run fetches nothing
    assert "fetching 0 file(s)" in capsys.readouterr().out

    assert dl.main(["--dir", str(root), "--fp8"]) == 0  # adding the fp8 file fetches only that
    assert fake_hub == [f"rkfg/Ovi-fp8_quantized:{FP8_FILE}"]


@pytest.mark.parametrize("error, tries", [
    # Hub unreachable: the first failure stops the run (no ~20 s of retries per remaining file).
    (LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub; check connection"), 1),
    (OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled"), 1),
    # A per-file error (gated / missing entry): every file is still tried.
    (EntryNotFoundError("404 Client Error: Entry Not Found for url"), 5),
])
def test_failure_names_files_repo_message_and_targets(tmp_path, monkeypatch, capsys, error, tries) -> None:
    root = tmp_path / "ckpt"
    present = root / "MMAudio/ext_weights/v1-16.pth"
    present.parent.mkdir(parents=True)
    present.write_text("already here")

    calls = []

    def offline(*a, **k):
        calls.append(k)
        raise error
    monkeypatch.setattr(dl, "hf_hub_download", offline)
    monkeypatch.setattr(dl, "snapshot_download", offline)
    assert dl.main(["--dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert "could not fetch 5 release file(s)" in err
    assert str(error) in err and type(error).__name__ in err
    for repo in ("Wan-AI/Wan2.2-TI2V-5B", "hkchengrex/MMAudio", "chetwinlow1/Ovi"):
        assert f"https://huggingface.co/{repo}" in err
    for target in CODEC_TARGETS + ["Ovi/model_960x960_10s.safetensors"]:
        if target != "MMAudio/ext_weights/v1-16.pth":
            assert f"->  {root}/{target}" in err
    assert f"{present}" not in err  # a present file is not reported missing
    assert "by hand" in err
    assert present.read_text() == "already here"
    assert len(calls) == tries


def test_fetched_folder_without_tokenizer_files_is_a_failure(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dl, "snapshot_download", lambda **k: str(k["local_dir"]))  # returns, fetches nothing
    tokenizer = [f for f in dl.release_files(root=tmp_path) if f.is_folder]
    with pytest.raises(dl.DownloadError, match="lacks"):
        dl.download(tokenizer, log=lambda _: None)


@pytest.mark.parametrize("fusion, command", [
    ("Ovi/model_960x960_10s.safetensors", "ovi-download --variant 960x960_10s"),
    ("Ovi/model.safetensors", "ovi-download --variant 720x720_5s"),
    (f"Ovi/{FP8_FILE}", "ovi-download --variant 720x720_5s --fp8"),
])
def test_missing_release_files_name_every_file_and_the_command(tmp_path, fusion, command) -> None:
    cfg = InferenceConfig(checkpoints=CheckpointPaths(root=str(tmp_path), fusion=fusion))
    missing = missing_release_files(cfg)
    assert [p for p, _ in missing] == [cfg.checkpoints.resolve(n, cfg.variant) for n in CHECKPOINT_FIELDS]
    assert {cmd for _, cmd in missing} == {f"{command} --dir {tmp_path}"}
    message = format_missing(missing)
    assert f"`{command} --dir {tmp_path}`" in message
    for path, _ in missing:
        assert f"  {path}\n" in message + "\n"


def test_missing_release_files_default_root_and_foreign_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative default root "checkpoints" -> no --dir in the command
    own = tmp_path / "mine.safetensors"
    own.write_text("x")
    cfg = InferenceConfig(checkpoints=CheckpointPaths(fusion=str(own), vocoder="/nowhere/vocoder.pt"))
    missing = dict(missing_release_files(cfg))
    assert own not in missing  # a present non-release file is fine
    assert "checkpoints.vocoder" in missing[Path("/nowhere/vocoder.pt")]
    assert missing[Path("checkpoints/Wan2.2-TI2V-5B/Wan2.2_VAE.pth")] == "ovi-download --variant 960x960_10s"
    assert missing_release_files(InferenceConfig(random_weights=True)) == []


@pytest.mark.parametrize("variant", sorted(FUSION))
def test_inference_presets_take_the_fusion_file_from_the_release_layout(variant) -> None:
    cfg = load_config(InferenceConfig, REPO / "configs/inference" / f"{variant}.yaml")
    assert cfg.variant == variant
    assert cfg.checkpoints.resolve("fusion", cfg.variant) == Path("checkpoints") / FUSION[variant].local
    with pytest.raises(ValueError, match="set the variant or checkpoints.fusion"):
        cfg.checkpoints.resolve("fusion", "1080p")


def test_config_paths_under_checkpoints_are_release_locations() -> None:
    """Training configs name release files by path; each must be where ovi-download puts one."""
    files = dl.release_files(dl.ALL_VARIANTS, fp8=True)
    known = {str(f.local_path) for f in files} | {str(f.local_dir) for f in files}  # files, and repo folders
    found = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        for value in re.findall(r":\s*(checkpoints/[^\s#]+)", path.read_text()):
            found.append(value)
            # ... or a model shipped in the repo itself (the toy model under checkpoints/toy)
            assert value in known or (REPO / value).exists(), \
                f"{path.relative_to(REPO)}: {value} is neither a release location ({sorted(known)}) nor in the repo"
    assert found, "expected the training configs to name release files"


def test_files_shipped_in_the_repo_are_found_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    from ovi.presets import load_inference_config

    monkeypatch.chdir(tmp_path)
    cfg = load_inference_config("toy")
    assert cfg.checkpoints.resolve("fusion", cfg.variant) == REPO / "checkpoints/toy/fusion.safetensors"
    (tmp_path / "checkpoints/toy").mkdir(parents=True)
    (tmp_path / "checkpoints/toy/fusion.safetensors").write_bytes(b"")  # a folder of that name here wins
    assert cfg.checkpoints.resolve("fusion", cfg.variant) == Path("checkpoints/toy/fusion.safetensors")
