"""Next-round subject uploads, one at a time against ``workers`` at a time: ``upload_manifest`` on N subjects.

    python -m benchmarks.subject_uploads                         # 200 subjects, 0.15 s API and 0.1 s image latency
    python -m benchmarks.subject_uploads --subjects 500 --workers 1 5 10 --api-latency 0.3

The server is the loopback Zooniverse of the tests (``ww_assets_tests/support/loopback_zooniverse.py``: the
Panoptes wire format, presigned image uploads), in this process, through the real panoptes-client. On loopback a
request takes about a millisecond, which says nothing about the real API, so each subject POST waits
``--api-latency`` seconds and each image PUT ``--upload-latency`` seconds on the server side (its ``slow_next``
knob; the handler is threaded, so waits overlap as they would on the real service). Every run uploads the same
manifest (PNG images of the size the next round writes) into a new subject set and is checked to give the same
subjects, images and link order as the serial run. Prints one line per run and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def manifest(folder: Path, n: int) -> Path:
    import numpy as np
    import pandas as pd

    from ww_assets.analysis.next_round import rank_candidates, write_manifest

    rng = np.random.default_rng(20211)
    table = pd.DataFrame({"image_id": [str(80_000_000 + i) for i in range(n)], "batch": "b0",
                          "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 5, n),
                          "predicted_interest": rng.uniform(size=n), "anomaly_score": rng.normal(size=n),
                          "anomaly_score_sigma": rng.normal(size=n), "has_subject": False})
    picks = rank_candidates(table, n, exploration=0.1)
    images = rng.integers(0, 255, (n, 3, 96, 96), dtype=np.uint8)
    index = {i: k for k, i in enumerate(table["image_id"])}
    return write_manifest(picks, lambda b, i: images[index[i]], folder, round_name="benchmark")


def contents(server, set_id: str) -> list[tuple[str, str]]:
    sha = {u["subject_id"]: u["sha256"] for u in server.uploads}
    return [(server.subjects[s]["metadata"]["object_id"], sha.get(s, "")) for s in
            server.subject_sets[set_id]["links"]["subjects"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--api-latency", type=float, default=0.15, help="seconds per subject POST (server side)")
    parser.add_argument("--upload-latency", type=float, default=0.1, help="seconds per image PUT (server side)")
    parser.add_argument("--link-batch", type=int, default=50)
    args = parser.parse_args(argv)

    from importlib.metadata import version

    from ww_assets.machine import machine_line
    from ww_assets.zooniverse import upload
    from ww_assets_tests.support.loopback_zooniverse import LoopbackZooniverse, write_export_folder

    with tempfile.TemporaryDirectory(prefix="ww-upload-bench-") as tmp:
        tmp = Path(tmp)
        path = manifest(tmp / "round", args.subjects)
        exports = write_export_folder(tmp / "exports", n_pages=5)
        reference = None
        serial_s = None
        print(f"{args.subjects} subjects, {args.api_latency:g} s per subject POST, {args.upload_latency:g} s per "
              f"image PUT, links in batches of {args.link_batch}")
        for workers in args.workers:
            with LoopbackZooniverse(exports.folder) as server:
                os.environ.update(server.env())
                for key in ("PANOPTES_CLIENT_ID", "PANOPTES_CLIENT_SECRET"):
                    os.environ.pop(key, None)
                server.slow_next(args.subjects, args.api_latency, path=r"^/api/subjects$")
                server.slow_next(args.subjects, args.upload_latency, path=r"^/upload/")
                upload.connect_from_env()
                t0 = time.perf_counter()
                out = upload.upload_manifest(path, project_id=server.project_id, subject_set_name="bench",
                                             link_batch=args.link_batch, workers=workers)
                wall = time.perf_counter() - t0
                got = contents(server, out.subject_set_id)
                assert out.created == args.subjects == len(got) == len(server.subjects), "subjects missing or twice"
                if reference is None:
                    reference, serial_s = got, wall
                same = got == reference
                digest = hashlib.sha256(repr(got).encode()).hexdigest()[:12]
                print(f"workers {workers:3d}: {wall:7.2f} s, {args.subjects / wall:6.1f} subjects/s, "
                      f"{serial_s / wall:5.1f}x the first run; same subjects, images and link order as the first: "
                      f"{same} ({digest})", flush=True)
                if not same:
                    return 1
    print(f"machine: {machine_line()}, panoptes-client {version('panoptes-client')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
