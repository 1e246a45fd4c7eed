"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2 --standalone``: every rank
evaluates the sets of ``eval_contract_tasks.all_metrics`` (each its share of the batches) and writes
the metrics it got to ``<out_dir>/eval_rank<r>.json``.

usage: ddp_eval_script.py <out_dir>
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seqmamba.train import distributed as dist_utils  # noqa: E402
from eval_contract_tasks import all_metrics  # noqa: E402


def main() -> None:
    env = dist_utils.init_distributed("cpu")
    torch.set_num_threads(1)
    metrics = all_metrics()
    with open(os.path.join(sys.argv[1], f"eval_rank{env.rank}.json"), "w") as f:
        json.dump(metrics, f)
    dist_utils.destroy_distributed()


if __name__ == "__main__":
    main()
