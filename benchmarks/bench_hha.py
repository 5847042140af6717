"""Time segbench.hha.encode on one 480 x 640 frame against the reference port's dominant step.

The reference port (Depth2HHA-python, numpy 1.23) takes 3.2 s per 480 x 640 frame on the 2-core
development machine; 72% of that is scipy.signal.convolve2d box sums of 9 float64 channels with 7 x 7 and
21 x 21 windows of ones. The port itself no longer runs on numpy >= 1.24, so this script times that step
side by side with encode() in one process (same machine load) and reports both and their ratio.

    python benchmarks/bench_hha.py [--repeats 7] [--port-repeats 3] [--many 8] [--shared ../shared]

``--many N`` also times encode_many on N cropped 425 x 560 frames: serially, over 2 worker processes (what
encode_many does) and over 2 threads (to show how much numpy's GIL release alone would give).
``--stages`` also times each stage of encode() on its own (best of ``--repeats``), to find where the time
goes on a machine where encode() is slower than expected. ``fit_normals`` is timed whole and in parts (window
counts, exact re-sums, band box sums alone); the normal solve is the difference.

Inputs: ``shared/golden/hha/port_demo_{depth,rawdepth}.png`` (1/10000 m) and ``port_demo_camera.npy``;
without them a synthetic 480 x 640 frame is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import signal

from segbench import hha
from segbench.infra import cpuinfo

PORT_MEDIAN_S = 3.22  # HHA-REFERENCE.md 3: median of 3 full getHHA calls, 480 x 640, D_RD
PORT_CONVOLVE_SHARE = 0.72


def load_frame(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    golden = shared / "golden" / "hha"
    if (golden / "port_demo_depth.png").is_file():
        from PIL import Image

        units = json.loads((golden / "golden.json").read_text())["cases"]["port_demo"]["depth_png_units_per_metre"]
        depth = np.asarray(Image.open(golden / "port_demo_depth.png"), dtype=np.float64) / units
        raw = np.asarray(Image.open(golden / "port_demo_rawdepth.png"), dtype=np.float64) / units
        return depth, raw, np.load(golden / "port_demo_camera.npy"), "port_demo D_RD"
    rng = np.random.default_rng(0)
    depth = 2.0 + rng.random((480, 640))
    raw = np.where(rng.random((480, 640)) < 0.2, 0.0, depth)
    return depth, raw, hha.NYU_COLOR_CAMERA, "synthetic 480x640"


def port_box_sums(channels: np.ndarray) -> None:
    """The reference's filterItChopOff core: convolve2d of the rotated channels, both window sizes."""
    for size in (7, 21):
        kernel = np.ones((size, size))
        for channel in channels:
            np.rot90(signal.convolve2d(np.rot90(channel, 2), kernel, mode="same"), 2)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_many(depth: np.ndarray, raw: np.ndarray, camera: np.ndarray, count: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows, cols = slice(45, 470), slice(40, 600)
    depths, raws = [depth[rows, cols]] * count, [raw[rows, cols]] * count
    cropped = hha.crop_camera(camera)
    serial = timed(lambda: hha.encode_many(depths, raws, cropped, threads=1, progress=False), 1)[0]
    procs = timed(lambda: hha.encode_many(depths, raws, cropped, threads=2, progress=False), 1)[0]
    with ThreadPoolExecutor(2) as pool:
        threads = timed(lambda: list(pool.map(lambda a: hha.encode(*a, cropped), zip(depths, raws))), 1)[0]
    print(f"encode_many, {count} frames 425x560: serial {serial:.2f} s, 2 processes {procs:.2f} s "
          f"({serial / procs:.2f}x), 2 threads {threads:.2f} s ({serial / threads:.2f}x)")


def time_stages(depth: np.ndarray, raw: np.ndarray, camera: np.ndarray, repeats: int) -> None:
    """Best-of-``repeats`` time of each stage of encode(), in the order encode() runs them."""
    from segbench.hha import boxsum, encoding, gravity_fit, normals

    frame = encoding._Frame(depth, raw, camera)
    radii = (encoding.ANGLE_RADIUS, encoding.GRAVITY_RADIUS)
    counts = boxsum.box_sums(frame.valid[None].astype(np.int32), radii=radii)
    near_singular = [np.nonzero((count[0] > 0) & (count[0] <= 2 * r + 1)) for r, count in zip(radii, counts)]
    n_angle, n_gravity = normals.fit_normals(frame.terms, frame.valid, radii=radii)
    geom = encoding.geometry(depth, raw, camera)

    def exact_sums():
        for radius, (rows, cols) in zip(radii, near_singular):
            boxsum.box_sums_exact_at(frame.terms, frame.valid, rows, cols, radius=radius, max_count=2 * radius + 1)

    def band_sums():
        for _ in boxsum.box_sums_by_band(frame.terms, radii=radii):
            pass

    stages = {
        "inputs, point cloud, plane-fit terms": lambda: encoding._Frame(depth, raw, camera),
        "valid pixels per window (integer box sums)": lambda: boxsum.box_sums(frame.valid[None].astype(np.int32),
                                                                            radii=radii),
        "exact re-sums of near-singular windows": exact_sums,
        "box sums by band (7x7 and 21x21) alone": band_sums,
        "fit_normals whole (all of the above + solve)": lambda: normals.fit_normals(frame.terms, frame.valid,
                                                                                    radii=radii),
        "gravity (10 iterations)": lambda: gravity_fit.estimate_gravity(n_gravity),
        "orient normals": lambda: normals.orient_normals(n_angle.copy(), frame.x_fit, frame.y_fit, frame.z_fit),
        "round to uint8": lambda: encoding.to_uint8(geom),
        "encode() whole": lambda: hha.encode(depth, raw, camera),
    }
    for name, fn in stages.items():
        print(f"  {name:45s} {min(timed(fn, repeats)) * 1e3:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed encode() calls (median reported)")
    parser.add_argument("--port-repeats", type=int, default=3, help="timed convolve2d steps (about 2 s each)")
    parser.add_argument("--many", type=int, default=0, help="also time encode_many on this many frames")
    parser.add_argument("--stages", action="store_true", help="also time each stage of encode()")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()

    depth, raw, camera, name = load_frame(args.shared)
    hha.encode(depth, raw, camera)  # warm-up: imports, page faults
    encode_s = timed(lambda: hha.encode(depth, raw, camera), args.repeats)
    channels = np.random.default_rng(0).random((9,) + depth.shape)
    port_s = timed(lambda: port_box_sums(channels), args.port_repeats)
    # Interleave a second round so that both see the same machine load.
    encode_s += timed(lambda: hha.encode(depth, raw, camera), args.repeats)

    enc, port = statistics.median(encode_s), statistics.median(port_s)
    cpu = cpuinfo.cpu_info()
    print(f"frame: {name}, {depth.shape[0]}x{depth.shape[1]}; CPU: {cpu['name']} "
          f"({' '.join(cpu['cpu_flags']) or 'no listed flags'}), {os.cpu_count()} cpus, "
          f"load average: {os.getloadavg()[0]:.2f}")
    print(f"encode():                        median {enc * 1e3:7.1f} ms  (min {min(encode_s) * 1e3:.1f}, "
          f"n={len(encode_s)})")
    print(f"port convolve2d box sums (9 ch): median {port * 1e3:7.1f} ms  (min {min(port_s) * 1e3:.1f}, "
          f"n={len(port_s)})")
    print(f"ratio convolve2d step / encode:  {port / enc:6.1f}x  (the step alone is ~{PORT_CONVOLVE_SHARE:.0%} "
          "of the port)")
    port_estimate = port / PORT_CONVOLVE_SHARE
    print(f"estimated full port here: {port_estimate:.2f} s -> speed-up {port_estimate / enc:.1f}x; "
          f"against the documented {PORT_MEDIAN_S} s: {PORT_MEDIAN_S / enc:.1f}x")
    if args.stages:
        print(f"stages of encode(), best of {args.repeats}:")
        time_stages(depth, raw, camera, args.repeats)
    if args.many:
        time_many(depth, raw, camera, args.many)


if __name__ == "__main__":
    main()
