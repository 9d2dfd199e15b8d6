"""``ovi-train``: train one stage, configured by a YAML under configs/train/ plus ``key=value`` overrides.

    python -m train.cli --config configs/train/audio_pretrain.yaml                      # one process
    torchrun --nproc_per_node 8 -m train.cli --config configs/train/fusion.yaml max_steps=20000
    deepspeed --num_gpus 8 -m train.cli --config configs/train/fusion.yaml data.batch_size=1
    deepspeed --hostfile hostfile --num_nodes 4 --num_gpus 8 -m train.cli --config ...  # multi-node

A run resumes from the latest intact checkpoint in ``{run_dir}/checkpoints`` when restarted, on any number of
ranks that divides its micro-batches per step. ``--dry-run`` checks every input, builds the model and engine,
prints each rank's peak memory and exits.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from typing import Optional

from ovi.config import to_yaml
from ovi.logs import setup_logging
from train.config import load_train_config


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/train/<stage>.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.batch_size=2 max_steps=100")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check inputs, build model and engine, print per-rank peak memory, exit")
    # The `deepspeed` launcher passes --local_rank; LOCAL_RANK in the environment carries the same value.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg))
        return
    rank = os.environ.get("RANK", "0")
    setup_logging(logging.INFO if rank == "0" else logging.WARNING,
                  f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    # DeepSpeed's ZeRO calls torch.distributed APIs that torch deprecates; one warning per step buries the log.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    from train.preflight import PreflightError

    try:
        if args.dry_run:
            from train.memory import dry_run  # imports torch / deepspeed: after argument errors are reported

            dry_run(cfg)
        else:
            from train.trainer import train

            train(cfg)
    except PreflightError as e:  # one line per problem, no traceback
        logging.getLogger("train").error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
