"""``ovi-train``: train one stage, configured by a YAML under configs/train/ plus ``key=value`` overrides.

    python -m train.cli --config configs/train/audio_pretrain.yaml                      # one process
    torchrun --nproc_per_node 8 -m train.cli --config configs/train/fusion.yaml max_steps=20000
    deepspeed --num_gpus 8 -m train.cli --config configs/train/fusion.yaml data.batch_size=1
    deepspeed --hostfile hostfile --num_nodes 4 --num_gpus 8 -m train.cli --config ...  # multi-node

A run resumes from the latest complete checkpoint in ``{run_dir}/checkpoints`` when restarted.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from typing import Optional

from ovi.config import to_yaml
from train.config import load_train_config


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/train/<stage>.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.batch_size=2 max_steps=100")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    # The `deepspeed` launcher passes --local_rank; LOCAL_RANK in the environment carries the same value.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg))
        return
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    # DeepSpeed's ZeRO calls torch.distributed APIs that torch deprecates; one warning per step buries the log.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    from train.trainer import train  # imports torch / deepspeed: after argument errors are reported

    train(cfg)


if __name__ == "__main__":
    main()
