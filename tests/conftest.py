"""Shared pytest plumbing: the ``--fixture-dir`` option that points fixture tests at golden folders.

A golden folder's kind is its name prefix (``tiny_fusion_a`` -> ``tiny_fusion``). A test that takes an
argument named ``<kind>_dir`` runs once per given folder of that kind; tests derive their cases from the
folder's own files. Without ``--fixture-dir`` every folder of ``../shared/reference/`` (or
``$OVI_REFERENCE_DIR``) is used; with it, tests of the kinds not given are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURE_KINDS = ("tiny_fusion", "audio_codec", "video_vae", "text_encoder")
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_reference_dir() -> Path:
    return Path(os.environ.get("OVI_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fixture-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="golden fixture folder (repeatable); its kind is its name prefix, e.g. tiny_fusion_a. "
        "Default: every folder of ../shared/reference/ or $OVI_REFERENCE_DIR.",
    )


def _fixture_dirs(config: pytest.Config) -> list[Path]:
    given = [Path(p) for p in config.getoption("--fixture-dir")]
    if given:
        for p in given:
            if not (p / "config.json").is_file():
                raise pytest.UsageError(f"--fixture-dir {p}: no config.json there; pass a golden fixture folder")
        return given
    ref = default_reference_dir()
    if not ref.is_dir():
        raise pytest.UsageError(
            f"reference fixtures not found at {ref}; set OVI_REFERENCE_DIR or pass --fixture-dir DIR"
        )
    return sorted(p for p in ref.iterdir() if (p / "config.json").is_file())


def fixture_kind(path: Path) -> str | None:
    return next((k for k in FIXTURE_KINDS if path.name.startswith(k + "_")), None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for kind in FIXTURE_KINDS:
        arg = f"{kind}_dir"
        if arg in metafunc.fixturenames:
            dirs = [d for d in _fixture_dirs(metafunc.config) if fixture_kind(d) == kind]
            if dirs:
                metafunc.parametrize(arg, dirs, ids=[d.name for d in dirs], scope="module")
            elif metafunc.config.getoption("--fixture-dir"):  # the user chose other kinds
                metafunc.parametrize(arg, [pytest.param(None, marks=pytest.mark.skip(
                    reason=f"no {kind}_* folder among --fixture-dir"))], ids=[f"no_{kind}"])
            else:
                raise pytest.UsageError(f"{metafunc.function.__name__} needs a {kind}_* fixture folder; none found "
                                        f"in {default_reference_dir()}")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference folder holding the full-size key manifests."""
    ref = default_reference_dir()
    if not ref.is_dir():
        pytest.fail(f"reference manifests not found at {ref}; set OVI_REFERENCE_DIR")
    return ref
