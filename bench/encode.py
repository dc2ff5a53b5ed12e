#!/usr/bin/env python3
"""Measure encode.py against tiktoken (single thread) and the pure-Python reference BPE.

    python bench/encode.py                    # Shakespeare (concatenated), ~1 minute
    python bench/encode.py --big_mb 1024      # plus a generated 1 GB single-file corpus

Prints MB/s of: our encode.py path (end to end in a subprocess, and in-process without the
start-up), tiktoken single thread built from the same vocabulary files, and the reference
algorithm (timed on a subset, cold cache); the ratios; our peak RSS (encode.py and its workers,
summed, sampled from /proc). Checks the ids are identical. Linux only (reads /proc).
On a busy machine wall-clock MB/s mostly measures the other load; the MB per CPU-second figures
(encode.py: all its processes; tiktoken: the one thread) are printed beside them for that reason.
"""

import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.corpus import safe_cut  # noqa: E402
from gpt2easy.encoder import ENDOFTEXT, get_encoder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) resident bytes of a process and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    sizes = []
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]) * 1024)
        except OSError:
            pass
    return sum(sizes), max(sizes, default=0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_encode_py(text_file: Path, out: Path, models: Path, workers: int):
    """Wall seconds, CPU seconds (all processes), peak summed RSS, peak single-process RSS."""
    cmd = [sys.executable, str(ROOT / "encode.py"), str(text_file), str(out), "--combine",
           "50000", "--models_dir", str(models), "--workers", str(workers)]
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def poll():
        while proc.poll() is None:
            total, single = tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], single)
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    thread.join()
    if proc.returncode:
        sys.exit(f"encode.py failed:\n{err}")
    print("  encode.py:", err.strip().splitlines()[-1])
    return seconds, cpu, peak[0], peak[1]


def stock_tiktoken(vocab: Path):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab / "vocab.bpe"), str(vocab / "encoder.json"))
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
    return tiktoken.Encoding("gpt2-stock", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def npz_prefix(path: Path, count: int) -> tuple[np.ndarray, int]:
    """The first `count` ids of arr_0 and the total number of ids, without loading it all."""
    total = 0
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0
                if version != (1, 0):
                    read = np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                if name == "arr_0.npy":
                    first = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
                total += shape[0]
    return first, total


def measure(name: str, text_file: Path, models: Path, vocab: Path, workers: int,
            baseline_mb: float, reference_kb: int) -> None:
    size_mb = text_file.stat().st_size / 1e6
    print(f"\n== {name}: {size_mb:.1f} MB in one file")
    with tempfile.TemporaryDirectory(dir=text_file.parent) as tmp:
        out = Path(tmp) / "out.npz"
        seconds, cpu, rss_sum, rss_max = run_encode_py(text_file, out, models, workers)
        ours, ours_cpu = size_mb / seconds, size_mb / cpu
        print(f"  ours, encode.py end to end: {ours:.1f} MB/s ({seconds:.1f} s, incl. start-up; "
              f"{ours_cpu:.1f} MB per CPU-second over all its processes); "
              f"peak RSS {rss_sum / 2**20:.0f} MiB summed over processes "
              f"(largest single process {rss_max / 2**20:.0f} MiB)")
        # tiktoken single thread on the first baseline_mb (all of it when smaller).
        with open(text_file, encoding="utf-8") as f:
            text = f.read(int(baseline_mb * 1e6))
        if len(text) < text_file.stat().st_size:
            text = text[: safe_cut(text)]
        stock = stock_tiktoken(vocab)
        start, cpu = time.perf_counter(), time.process_time()
        ids = stock.encode_ordinary(text)
        tk = len(text.encode()) / 1e6 / (time.perf_counter() - start)
        tk_cpu = len(text.encode()) / 1e6 / (time.process_time() - cpu)
        first, total = npz_prefix(out, len(ids))
        same = np.array_equal(first, np.asarray(ids, dtype=first.dtype))
        print(f"  tiktoken single thread: {tk:.1f} MB/s ({tk_cpu:.1f} MB per CPU-second; "
              f"on {len(text) / 1e6:.0f} MB); "
              f"ids identical to ours: {same}; our archive holds {total} ids")
        if len(text) == text_file.stat().st_size:
            speed = _in_process(text_file, out, vocab, workers, size_mb)
            print(f"  ours in-process (encoder already built, no start-up): {speed:.1f} MB/s")
    sample = text[: safe_cut(text[: reference_kb * 1000]) or reference_kb * 1000]
    ref = get_encoder(vocab, engine="reference")
    ref.cache.clear()
    start = time.perf_counter()
    ref_ids = ref.encode(sample)
    pure = len(sample.encode()) / 1e6 / (time.perf_counter() - start)
    print(f"  reference pure Python: {pure:.2f} MB/s (first {len(sample) / 1e3:.0f} KB, cold "
          f"cache; ids identical: {ref_ids == ids[: len(ref_ids)]})")
    print(f"  ratios: ours/tiktoken {ours / tk:.2f}x wall-clock ({ours_cpu / tk_cpu:.2f}x per "
          f"CPU-second), ours/reference {ours / pure:.0f}x, tiktoken/reference {tk / pure:.0f}x")


def _in_process(text_file: Path, out: Path, vocab: Path, workers: int, size_mb: float) -> float:
    from gpt2easy.dataset import encode_to_npz

    encoder = get_encoder(vocab)
    start = time.perf_counter()
    encode_to_npz(text_file, out, encoder, workers=workers or None)
    return size_mb / (time.perf_counter() - start)


def make_big_corpus(path: Path, shakespeare: Path, megabytes: int, seed: int = 0) -> None:
    """A single text file of `megabytes` MB: Shakespeare's lines in a seeded random order."""
    lines = [ln for f in sorted(shakespeare.glob("*.txt"))
             for ln in f.read_text(encoding="utf-8").splitlines(keepends=True)]
    rng = random.Random(seed)
    target, written = megabytes * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            block = "".join(rng.choices(lines, k=20000))
            f.write(block)
            written += len(block.encode())


def bench(
    shakespeare_dir: str = str(SHARED / "shakespeare"),
    vocab_dir: str = str(SHARED / "gpt2-vocab"),
    big_mb: int = 0,
    workers: int = 0,
    baseline_mb: float = 64,
    reference_kb: int = 500,
    tmp_dir: str | None = None,
) -> None:
    """Time encode.py, tiktoken (one thread) and the reference BPE; print MB/s, ratios, RSS.

    Args:
        shakespeare_dir: folder of the Shakespeare corpus (its files are concatenated).
        vocab_dir: folder holding encoder.json and vocab.bpe.
        big_mb: also encode a generated single-file corpus of this many MB (0: skip; 1024: 1 GB).
        workers: encode.py --workers (0: one per core).
        baseline_mb: tiktoken single thread is timed on at most this many MB of each corpus.
        reference_kb: the pure-Python reference is timed on this many KB (it is slow).
        tmp_dir: where the temporary corpora and archives go (default: the system's).
    """
    shakespeare, vocab = Path(shakespeare_dir), Path(vocab_dir)
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        (models / "124M").mkdir(parents=True)
        (models / "124M" / "hparams.json").write_text('{"n_vocab": 50257}')
        for name in ("encoder.json", "vocab.bpe"):
            (models / "124M" / name).symlink_to(vocab.resolve() / name)
        concat = tmp / "shakespeare.txt"
        concat.write_text("".join(f.read_text(encoding="utf-8")
                                  for f in sorted(shakespeare.glob("*.txt"))), encoding="utf-8")
        measure("Shakespeare, concatenated", concat, models, vocab, workers, baseline_mb,
                reference_kb)
        if big_mb:
            big = tmp / "big.txt"
            print(f"\ngenerating a {big_mb} MB corpus ...")
            make_big_corpus(big, shakespeare, big_mb)
            measure(f"generated {big_mb} MB corpus", big, models, vocab, workers, baseline_mb,
                    reference_kb)


if __name__ == "__main__":
    cli.run(bench)
