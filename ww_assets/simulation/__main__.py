"""``python -m ww_assets.simulation --size small --seed 20211 --out data/sample``"""

from __future__ import annotations

import argparse
import json
import sys

from ww_assets.simulation.sample import build_sample, ensure_sample
from ww_assets.simulation.sizes import SAMPLE_SIZES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ww_assets.simulation",
                                description="Build the embedded W&W sample (simulated cutouts and exports).")
    p.add_argument("--size", default="small",
                   help=f"one of {', '.join(SAMPLE_SIZES)} or a number of images (default small)")
    p.add_argument("--seed", type=int, default=20211)
    p.add_argument("--out", default="data/sample", help="output folder (replaced whole)")
    p.add_argument("--workers", type=int, default=None, help="processes for drawing images (bytes do not change)")
    p.add_argument("--cutout-format", choices=["fits", "npy"], default=None)
    p.add_argument("--no-thumbnails", action="store_true")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when --out already holds this size and seed")
    a = p.parse_args(argv)
    size: str | int = int(a.size) if a.size.isdigit() else a.size
    overrides = {}
    if a.workers:
        overrides["workers"] = a.workers
    if a.cutout_format:
        overrides["cutout_format"] = a.cutout_format
    if a.no_thumbnails:
        overrides["thumbnails"] = False
    try:
        if a.if_missing:
            out = ensure_sample(a.out, size=size, seed=a.seed, **overrides)
            print(f"sample ready at {out}")
            return 0
        m = build_sample(a.out, size=size, seed=a.seed, **overrides)
    except ValueError as exc:
        p.error(str(exc))
    keys = ["size", "seed", "n_images", "n_subjects", "n_classifications", "n_volunteers", "n_comments",
            "build_seconds", "image_seconds"]
    print(json.dumps({k: m[k] for k in keys} | {"counts": m["counts"], "out": a.out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
