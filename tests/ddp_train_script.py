"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2 --standalone``.

Rank 0 picks a fresh run directory and broadcasts it (as the CLI does); every rank trains the tiny
task with the shared Trainer and saves its final weights to ``<out_dir>/weights_rank<r>.pt`` (outside
the run directory, which rank 0 alone writes). Then a second run whose loss turns NaN on rank 1
only; each rank writes the error it raised to ``<out_dir>/nan_rank<r>.txt``.

usage: ddp_train_script.py <runs_parent_dir> <out_dir>
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seqmamba.train import Trainer, TrainingError  # noqa: E402
from seqmamba.train import distributed as dist_utils  # noqa: E402
from trainer_tiny_task import TinyRegressionTask  # noqa: E402


def main() -> None:
    runs_parent, out_dir = sys.argv[1], sys.argv[2]
    env = dist_utils.init_distributed("cpu")
    torch.set_num_threads(1)
    run_dir = dist_utils.broadcast_object(
        os.path.join(runs_parent, f"run-{time.time_ns()}-{os.getpid()}") if env.is_rank0 else None
    )
    cfg = {
        "seed": 5,
        "trainer": {"max_steps": 6, "batch_size": 4, "grad_accum_steps": 2, "log_every": 2, "eval_every": 3,
                    "ckpt_every": 3, "device": "cpu", "progress": False, "tensorboard": False},
        "optimizer": {"lr": 1e-2},
        "scheduler": {"name": "cosine", "warmup_steps": 1},
    }
    trainer = Trainer(TinyRegressionTask(cfg), cfg, run_dir)
    result = trainer.fit()
    os.makedirs(out_dir, exist_ok=True)
    torch.save(
        {"state": trainer.model.state_dict(), "step": result["step"], "val_loss": result["val/loss"],
         "world_size": dist_utils.get_world_size()},
        os.path.join(out_dir, f"weights_rank{env.rank}.pt"),
    )

    # a NaN loss on rank 1 alone must stop every rank (no hang) before the bad update is saved
    nan_task = TinyRegressionTask(cfg, nan_at_batch=9 if env.rank == 1 else None)  # batch 9 = step 5
    nan_trainer = Trainer(nan_task, cfg, os.path.join(out_dir, "nan_run"))
    try:
        nan_trainer.fit()
        message = "no error"
    except TrainingError as err:
        message = str(err)
    with open(os.path.join(out_dir, f"nan_rank{env.rank}.txt"), "w") as f:
        f.write(message)
    dist_utils.destroy_distributed()


if __name__ == "__main__":
    main()
