"""Several processes (GPUs, or CPU processes with gloo) training one model with DDP under torchrun.

    torchrun --standalone --nproc_per_node 4 train.py --preset llama_1m
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 train.py ...

`TrainConfig.batch_size` stays the *global* batch: every process draws the same windows from the
same seeded generator and keeps its own contiguous share (batch_size / processes rows), so a run
sees exactly the data of a one-process run, for any number of processes, and resumes from the
one generator state in the checkpoint. Rank 0 alone writes the run folder, the log and the
checkpoints, and evaluates (on the unwrapped model: no collective inside evaluation).
"""
import os

import torch
import torch.distributed as dist


class Context:
    """This process's place in the job: rank, world size, and the few collectives training needs
    (a Ctrl-C is agreed through `mean`: train.py averages a 0/1 flag with the step's loss).
    Without torchrun (WORLD_SIZE unset or 1) every method is the single-process no-op."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled, self.owns_group = self.world > 1, False

    @property
    def is_main(self):
        return self.rank == 0

    def start(self, device):
        """Join the process group (NCCL on CUDA, gloo otherwise); returns this process's device."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True
        return device

    def close(self):
        if self.owns_group:
            dist.destroy_process_group()
            self.owns_group = False

    def check_batch(self, batch_size):
        if batch_size % self.world:
            raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes "
                             f"({self.world}): it is the global batch, split evenly between them")

    def share(self, batch):
        """This process's rows of a global dict batch (every tensor split on dim 0)."""
        if not self.enabled:
            return batch
        return {k: v.chunk(self.world)[self.rank] if torch.is_tensor(v) else v for k, v in batch.items()}

    def mean(self, values):
        """The mean over processes of a list of floats (the same list on every process)."""
        if not self.enabled or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.enabled:
            dist.barrier()
