"""Data preparation at growing corpus sizes: tokens/s and peak memory, to show memory stays flat.

    python bench/data_prepare.py                       # the local train.txt repeated 10x and 42x
    python bench/data_prepare.py --copies 1,10,100 --tokenizer bpe2048 --source /path/to/train.txt

Each size is a generated local data folder (the source train.txt written `copies` times, so the
text is real TinyStories) prepared by data.get_token_data in a fresh process with an empty
cache; the child reports its peak resident memory (VmHWM) before and after preparing. The
folders and caches live in a temporary directory, removed at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def peak_rss_mb():
    with open("/proc/self/status") as f:  # VmHWM: this process's own peak (ru_maxrss keeps the parent's over exec)
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) / 1024


def child(folder, tokenizer):
    import data
    before = peak_rss_mb()
    start = time.perf_counter()
    tokens = data.get_token_data("train", tokenizer, folder).tokens
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": len(tokens), "seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}))


def make_folder(path, source, copies):
    os.makedirs(path)
    with open(source, "rb") as src, open(os.path.join(path, "train.txt"), "wb") as out:
        text = src.read()
        for _ in range(copies):
            out.write(text)
    with open(os.path.join(path, "valid.txt"), "wb") as out:
        out.write(text[: len(text) // 10])
    return os.path.getsize(os.path.join(path, "train.txt"))


def main():
    default_source = os.path.join(os.environ.get("MMS_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data", "tinystories"),
                                  "train.txt")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=default_source, help="a TinyStories-layout train.txt to repeat")
    p.add_argument("--copies", default="10,42", help="comma-separated repeat counts, one run each")
    p.add_argument("--tokenizer", default="bpe2048")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        return child(*args._child)
    if not os.path.isfile(args.source):
        sys.exit(f"error: --source {args.source!r} is not a file (set MMS_DATA_DIR or pass --source)")
    copies = [int(c) for c in args.copies.split(",")]
    print(f"{'copies':>6} {'text MB':>8} {'tokens':>12} {'seconds':>8} {'tokens/s':>10} {'RSS after import MB':>20} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as work:
        for n in copies:
            folder = os.path.join(work, f"x{n}")
            size = make_folder(folder, args.source, n)
            env = dict(os.environ, MMS_CACHE_DIR=os.path.join(work, f"cache{n}"))
            out = subprocess.run([sys.executable, __file__, "--_child", folder, args.tokenizer], env=env,
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{n:>6} {size / 1e6:>8.0f} {r['tokens']:>12,} {r['seconds']:>8.1f} {r['tokens'] / r['seconds']:>10,.0f} "
                  f"{r['rss_before_mb']:>20.0f} {r['peak_rss_mb']:>12.0f}")
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
