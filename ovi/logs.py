"""Logging set-up shared by the command-line tools: each tool's own format, and optional packages' import-time
chatter kept out of a run's log."""
from __future__ import annotations

import logging

# Loggers whose import-time warnings say nothing about the run: torchao 0.18's wheel reports its CUDA kernels
# (and kernels built for another Python) and Triton missing on any CPU host; torch then warns that torchao
# registers enums it no longer needs to; diffusers that torchao's tensor types could not be imported in turn.
# They fire whenever diffusers / transformers import with torchao installed (the "quant" extra). Errors still
# show, and a run that uses torchao (quantize=) reports its own problems (ovi/models/quant.py).
IMPORT_CHATTER = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


def setup_logging(level: int = logging.INFO, fmt: str = "%(asctime)s %(name)s: %(message)s") -> None:
    """``logging.basicConfig(level, fmt)`` with the import chatter above raised to errors only."""
    logging.basicConfig(level=level, format=fmt)
    for name in IMPORT_CHATTER:
        logging.getLogger(name).setLevel(logging.ERROR)
