"""Peak memory and read cost of the lazy store at the real data's scale, against a store 10x smaller.

    PYTHONPATH=src nice -n 19 python benchmarks/bench_store_rss.py [--dir DIR] [--n 8498] [--reads 300] \
        [--out store_rss.json] [--keep]

Writes two SBD-like stores (``segbench.data.synthetic.sbd_store``: 500 x 375 / 375 x 500 decoded JPEGs and labels),
``n`` and ``n // 10`` images, each in a fresh process (about 45 ms per image on one core, so several
minutes for 8,498, and about 5 GB on disk). Then, each in a fresh process, it opens a store and reads
``--reads`` random samples (image and label), as a training loop does: first with the file's pages evicted
from the page cache (``posix_fadvise(DONTNEED)`` on that file only: cold, as from a cluster's shared
filesystem), then the same indices again (warm). Peak RSS comes from ``getrusage`` (``ru_maxrss``); the
baseline is the peak after the imports, before the store is opened. For comparison, the small store is also
read the way the store was read before it was lazy (every field whole). The stores are deleted at the end
unless ``--keep``.

Measured on a shared 2-core AMD EPYC (2026-12, 300 reads; peak RSS includes the 40 MB of the imports):

    images  file MB  write ms/img  write peak MB  read peak MB  (+ over imports)  cold ms/read  warm ms/read
      8498     4834          83.5            181            66              26.2          4.16          1.08
       849      483          50.6            159            56              15.6          2.95          1.24

The eager read of the 849-image store peaks at 700 MB (637 MB of data), so about 6.4 GB for 8,498 images. The
lazy increment stops growing at about 33 MB: it is HDF5's metadata cache holding chunk indices (a store of
750,000 chunks, 10x the large one's, also peaks at +33 MB). Writes ran beside other jobs (50-84 ms per image).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from segbench.infra.atomic import write_json


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_write(path: str, n: int) -> dict:
    from segbench.data.synthetic.sbd_store import write_sbd_like_store
    start = time.perf_counter()
    write_sbd_like_store(path, n=n, seed=0)
    seconds = time.perf_counter() - start
    return {"images": n, "write_s": seconds, "write_ms_per_image": 1000 * seconds / n,
            "file_mb": os.path.getsize(path) / 1e6, "write_peak_rss_mb": _peak_mb()}


def _evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _child_read(path: str, reads: int) -> dict:
    import numpy as np

    from segbench.data.store import Store
    baseline = _peak_mb()
    _evict(path)
    store = Store(path)
    after_open = _peak_mb()
    order = np.random.default_rng(0).integers(0, len(store), reads)
    times = {}
    for cache in ("cold", "warm"):
        start = time.perf_counter()
        for i in order:
            image, label = store.image(int(i)), store.label(int(i))
        times[cache] = 1000 * (time.perf_counter() - start) / reads
    return {"images": len(store), "reads": reads, "baseline_rss_mb": baseline, "after_open_rss_mb": after_open,
            "peak_rss_mb": _peak_mb(), "increment_mb": _peak_mb() - baseline,
            "read_ms_per_sample_cold": times["cold"], "read_ms_per_sample_warm": times["warm"],
            "sample_shape": list(image.shape), "label_shape": list(label.shape)}


def _child_read_eager(path: str) -> dict:
    import h5py
    baseline = _peak_mb()
    with h5py.File(path, "r") as f:
        fields = {name: f[name]["data"][()] for name in f if isinstance(f[name], h5py.Group)}
    return {"baseline_rss_mb": baseline, "peak_rss_mb": _peak_mb(), "increment_mb": _peak_mb() - baseline,
            "data_mb": sum(a.nbytes for a in fields.values()) / 1e6}


def _in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None, help="where to write the stores (default: a temporary folder)")
    parser.add_argument("--n", type=int, default=8498, help="images of the large store (SBD train has 8,498)")
    parser.add_argument("--reads", type=int, default=300, help="random samples read per store")
    parser.add_argument("--out", default=None, help="JSON path for the figures (default: print only)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, *rest = args.child
        result = {"write": lambda: _child_write(path, int(rest[0])), "read": lambda: _child_read(path, int(rest[0])),
                  "eager": lambda: _child_read_eager(path)}[kind]()
        print(json.dumps(result))
        return

    work = Path(args.dir or tempfile.mkdtemp(prefix="segbench-store-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    report = {"cpu": cpu, "stores": {}}
    try:
        for n in (args.n, max(1, args.n // 10)):
            path = str(work / f"sbd_like_{n}.h5")
            entry = _in_child("write", path, str(n))
            entry["lazy"] = _in_child("read", path, str(args.reads))
            if n != args.n:
                entry["eager"] = _in_child("eager", path)
            report["stores"][str(n)] = entry
            print(json.dumps({n: entry}, indent=1), flush=True)
    finally:
        if not args.keep:
            for store in work.glob("sbd_like_*.h5"):
                store.unlink()
            if args.dir is None:
                shutil.rmtree(work)
    print(f"\n{cpu}; {args.reads} random reads of image + label per store")
    print(f"{'images':>7}{'file MB':>9}{'write ms/img':>13}{'write peak MB':>14}{'read peak MB':>13}"
          f"{'(+ over imports)':>17}{'cold ms/read':>13}{'warm ms/read':>13}{'eager peak MB':>14}")
    for n, e in report["stores"].items():
        lazy = e["lazy"]
        eager = f"{e['eager']['peak_rss_mb']:.0f}" if "eager" in e else "-"
        print(f"{n:>7}{e['file_mb']:>9.0f}{e['write_ms_per_image']:>13.1f}{e['write_peak_rss_mb']:>14.0f}"
              f"{lazy['peak_rss_mb']:>13.0f}{lazy['increment_mb']:>17.1f}{lazy['read_ms_per_sample_cold']:>13.2f}"
              f"{lazy['read_ms_per_sample_warm']:>13.2f}{eager:>14}")
    if args.out:
        print("wrote", write_json(args.out, report))


if __name__ == "__main__":
    main()
