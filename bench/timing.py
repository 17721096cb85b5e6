"""The one timing helper the benchmarks share."""
import time


def median_time(fn, steps, warmup=2):
    """Median wall-clock seconds of fn() over `steps` calls, after `warmup` untimed calls
    (compilation, allocator and cache warm-up)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
