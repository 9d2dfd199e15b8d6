"""ovi.logs.setup_logging: the tools' logs keep their own warnings and errors, and lose optional packages'
import-time chatter (torchao's missing CUDA kernels on a CPU host, torch's and diffusers' echoes of it)."""
from __future__ import annotations

import logging
import subprocess
import sys

from ovi.logs import IMPORT_CHATTER, setup_logging


def test_import_chatter_is_dropped_and_everything_else_kept(caplog):
    setup_logging()
    with caplog.at_level(logging.INFO):
        for name in IMPORT_CHATTER:
            logging.getLogger(name).warning("chatter from %s", name)
            logging.getLogger(f"{name}.child").warning("chatter from a child of %s", name)
        logging.getLogger("torchao").error("a real torchao error")
        logging.getLogger("ovi.pipeline").info("loading models")
        logging.getLogger("ovi.toy.evaluate").warning("a warning about the run")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["a real torchao error", "loading models", "a warning about the run"]


def test_loading_the_pipeline_after_setup_prints_no_import_chatter():
    """ovi-generate's order: logging first, then the pipeline (diffusers, transformers, torchao when installed)."""
    code = "from ovi.logs import setup_logging; setup_logging(); import ovi.pipeline; print('loaded')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "loaded"
    for chatter in ("Failed to load", "Enum subclass", "Unable to import `torchao`", "Detected no triton"):
        assert chatter not in run.stderr, run.stderr
