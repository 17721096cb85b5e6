"""Refuse what cannot fit before allocating it: the memory free on a device, and the check."""
import torch


def free_memory(device):
    """Bytes free on device: CUDA's free memory, else the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 * 2**30  # unknown (not Linux): assume a laptop's


def check_fits(nbytes, device, what, advice):
    """ValueError when nbytes (an estimate) exceed the memory free on device."""
    free = free_memory(device)
    if nbytes > free:
        raise ValueError(f"{what} needs about {nbytes / 2**30:,.4g} GiB but only {free / 2**30:,.1f} GiB is free "
                         f"on {device.type}: {advice}")
