"""What every layer above leans on; nothing of the project itself is imported here. One room a
concern, each usable alone (`from tools.files import atomic_save`) or through this package
(`tools.atomic_save`):

    device      which device, bf16 autocast, torch.compile, determinism, seeding, MFU
    memory      the memory free on a device, and `check_fits` before allocating
    optimizers  several optimizers stepped as one (Muon + AdamW)
    files       atomic saves, orphaned temporary files, digests, weights I/O, parameter counts
    cli         the command-line error contract: one line `error: ...`, exit code 2
    text        markdown tables, padded id rows
"""
from tools.cli import USER_ERRORS, ArgumentParser, fail  # noqa: F401
from tools.device import (GPU_PEAK_FLOPS, autocast, autocast_enabled, compile_enabled, deterministic,  # noqa: F401
                          estimate_mfu, pick_device, seed_everything, to_device)
from tools.files import (SaveError, atomic_save, check_architecture, count_parameters, digest, load_weights,  # noqa: F401
                         remove_orphaned_temps, save_weights)
from tools.memory import check_fits, free_memory  # noqa: F401
from tools.optimizers import Optimizers  # noqa: F401
from tools.text import markdown_table, pad_rows  # noqa: F401
