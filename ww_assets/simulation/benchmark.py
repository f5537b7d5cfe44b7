"""Time building the embedded sample: ``python -m ww_assets.simulation.benchmark --size small [--workers N]``.

Builds into a temporary folder (deleted afterwards unless ``--keep``), then prints one line per figure: wall time
of the image phase (GalSim drawing + FITS/npy + thumbnails), of the volunteer phase (pages, clicks, exports), the
total, the CPU time of all processes (the figure to extrapolate from on a busy machine), images per second, and
the machine (CPU model, cores, load average before and after, library versions).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from ww_assets.machine import cpu_model


def main(argv: list[str] | None = None) -> int:
    import galsim
    import numpy as np

    from ww_assets.simulation.sample import build_sample

    p = argparse.ArgumentParser(prog="python -m ww_assets.simulation.benchmark")
    p.add_argument("--size", default="small")
    p.add_argument("--seed", type=int, default=20211)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--workdir", default=None, help="where to build (default: a temporary folder)")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    size = int(a.size) if a.size.isdigit() else a.size
    work = Path(a.workdir or tempfile.mkdtemp(prefix="ww-sample-bench-"))
    load0 = os.getloadavg()

    def cpu() -> float:
        r = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(x.ru_utime + x.ru_stime for x in r)

    c0 = cpu()
    t0 = time.perf_counter()
    kw = {"workers": a.workers} if a.workers else {}
    m = build_sample(work / "sample", size=size, seed=a.seed, **kw)
    total = time.perf_counter() - t0
    cpu_s = cpu() - c0  # worker processes count once they have exited (the pool is closed by now)
    load1 = os.getloadavg()
    n = m["n_images"]
    print(f"sample size          {m['size']} ({n} images, {m['n_batches']} batches, {m['cutout_format']} cutouts, "
          f"thumbnails {m['thumbnails']})")
    print(f"image phase          {m['image_seconds']:.1f} s  ({n / max(m['image_seconds'], 1e-9):.0f} images/s)")
    print(f"volunteer phase      {total - m['image_seconds']:.1f} s  ({m['n_classifications']} classifications, "
          f"{m['n_comments']} comments)")
    print(f"total                {total:.1f} s wall, {cpu_s:.1f} s CPU (all processes; "
          f"{1000 * cpu_s / n:.1f} ms CPU per image)")
    print(f"workers              {a.workers or 'auto'}")
    print(f"machine              {cpu_model()}; {os.cpu_count()} cores; load {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after; python {platform.python_version()}, galsim {galsim.__version__}, "
          f"numpy {np.__version__}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
