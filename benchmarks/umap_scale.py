"""How long UMAP of N x 128 latent vectors takes, and how much memory it needs, on this machine.

    python benchmarks/umap_scale.py                                  # 10k, 100k with the backends that fit
    python benchmarks/umap_scale.py --sizes 1000000 --backends auto # the 1M target on a GPU (cuML when installed)
    python benchmarks/umap_scale.py --sizes 10000 --backends umap_learn,umap_learn_torch_knn --quality

Each (backend, N) runs in its own subprocess, so the peak resident memory printed is that run's own (and a crash or
an out-of-memory kill costs one row, not the table). Data: a seeded mixture of 50 Gaussian clusters in 128-d
squashed by tanh, like the encoder's outputs; generating it is not timed. Stage times come from
``ww_assets.analysis.embedding.fit_umap`` (kNN, fuzzy graph, init, layout). ``--quality`` adds
the neighbourhood preservation on 2,000 random points (share of each point's 10 latent neighbours that are among
its 10 map neighbours) and the cluster purity (share of its 10 map neighbours from its own synthetic cluster), so a
faster backend can be checked for giving a comparable map. A small warm-up fit first keeps numba's one-off
compilation out of the timed fit (reported apart; ``--no-warmup`` to include it).

Needs numpy, torch, umap-learn, psutil; not Dagster. Prints the machine first, then one Markdown row per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def synthetic_latents(n: int, dim: int = 128, n_clusters: int = 50, seed: int = 0, return_labels: bool = False):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.8, size=(n_clusters, dim)).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    labels = rng.choice(n_clusters, size=n, p=weights)
    out = np.empty((n, dim), np.float32)
    step = 262_144
    for s in range(0, n, step):
        lab = labels[s:s + step]
        out[s:s + step] = np.tanh(centres[lab] + rng.normal(scale=0.35, size=(len(lab), dim)).astype(np.float32))
    return (out, labels) if return_labels else out


def cluster_purity(embedding, labels, k: int = 10, n_query: int = 2000, seed: int = 0) -> float:
    """Mean share of a point's k map neighbours from its own cluster (2,000 random points): does the map keep the
    clusters apart? (Within a cluster the synthetic latents are isotropic noise, which no 2-d map can preserve,
    so the neighbourhood preservation is low for every backend at large N; purity is the comparable figure.)"""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    q = rng.choice(len(embedding), size=min(n_query, len(embedding)), replace=False)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding[q], return_distance=False)[:, 1:]
    return float((labels[nn] == labels[q][:, None]).mean())


def machine() -> dict:
    from ww_assets.machine import machine_info, torch_info

    info = machine_info()
    try:
        info.update({"gpu": "none", **torch_info()})
    except ImportError:
        info["torch"] = "missing"
    for mod in ("umap", "pynndescent", "numba", "sklearn"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "missing"
    try:
        import cuml

        info["cuml"] = cuml.__version__
    except Exception:
        info["cuml"] = "missing"
    return info


def run_one(n: int, backend: str, dim: int, n_epochs: int | None, init: str, seed: int, parallel: bool,
            quality: bool, warmup: bool = True) -> dict:
    """One UMAP fit in this process; returns timings and peak memory."""
    import numpy as np

    from ww_assets.analysis.embedding import UMAPConfig, fit_umap, neighbourhood_preservation

    warm = None
    if warmup:
        # Numba compiles umap-learn's and pynndescent's kernels on first use (30-60 s, partly cached on disk):
        # time it apart. 5,000 points: above umap-learn's 4,096 cut, so the NNDescent path is compiled too.
        t0 = time.perf_counter()
        fit_umap(synthetic_latents(5000, dim, seed=seed + 1), UMAPConfig(backend=backend, n_epochs=10, init=init,
                                                                           seed=seed, parallel=parallel))
        warm = round(time.perf_counter() - t0, 1)
    x, labels = synthetic_latents(n, dim, seed=seed, return_labels=True)
    rss_data = _rss_gb()
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    cfg = UMAPConfig(backend=backend, n_epochs=n_epochs, init=init, seed=seed, parallel=parallel)
    t0 = time.perf_counter()
    res = fit_umap(x, cfg)
    total = time.perf_counter() - t0
    out = {"n": n, "dim": dim, "backend": res.backend, "device": res.device, "init": res.init,
           "n_epochs": res.n_epochs, "seconds": round(total, 2),
           "stages": {k: round(v, 2) for k, v in res.seconds.items()},
           "peak_rss_gb": round(_peak_rss_gb(), 2), "data_rss_gb": round(rss_data, 2),
           "finite": bool(np.isfinite(res.embedding).all()), "warmup_seconds": warm}
    if cuda:
        import torch

        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if quality:
        t1 = time.perf_counter()
        out["neighbourhood_preservation"] = round(neighbourhood_preservation(x, res.embedding, k=10,
                                                                             n_query=2000, seed=seed), 3)
        out["cluster_purity"] = round(cluster_purity(res.embedding, labels, seed=seed), 3)
        out["quality_seconds"] = round(time.perf_counter() - t1, 1)
    return out


def _rss_gb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**30
    except ImportError:
        return float("nan")


def _peak_rss_gb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated N (e.g. 10000,100000,1000000)")
    ap.add_argument("--backends", default="auto",
                    help="comma-separated: auto, umap_learn, umap_learn_torch_knn, torch, cuml")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--n-epochs", type=int, default=None, help="default: umap-learn's (500 below 10k, else 200)")
    ap.add_argument("--init", default="auto", help="auto (spectral <= 200k, PCA above), spectral, pca, random")
    ap.add_argument("--seed", type=int, default=20211)
    ap.add_argument("--parallel", action="store_true", help="umap_learn: all cores (not bit-reproducible)")
    ap.add_argument("--quality", action="store_true", help="also measure neighbourhood preservation")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is abandoned")
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first fit with numba compilation included (default: a small warm-up fit first)")
    ap.add_argument("--json", type=Path, default=None, help="also append each result as a JSON line here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        n, backend = args.child.split(":")
        print("RESULT " + json.dumps(run_one(int(n), backend, args.dim, args.n_epochs, args.init, args.seed,
                                             args.parallel, args.quality, not args.no_warmup)), flush=True)
        return 0

    info = machine()
    print("# UMAP scale benchmark")
    print("machine: " + json.dumps(info))
    print()
    print("| backend | device | N | init | epochs | total s | stages s | warm-up s | peak RSS GB | peak GPU GB "
          "| nbhd pres. | cluster purity |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    status = 0
    for backend in backends:
        for n in sizes:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{n}:{backend}", "--dim", str(args.dim),
                   "--init", args.init, "--seed", str(args.seed)]
            if args.n_epochs:
                cmd += ["--n-epochs", str(args.n_epochs)]
            if args.parallel:
                cmd.append("--parallel")
            if args.quality:
                cmd.append("--quality")
            if args.no_warmup:
                cmd.append("--no-warmup")
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=str(ROOT))
            except subprocess.TimeoutExpired:
                print(f"| {backend} | - | {n} | - | - | > {args.timeout:.0f} (timed out) | - | - | - | - | - | - |",
                      flush=True)
                status = 1
                continue
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
                print(f"| {backend} | - | {n} | - | - | failed after {time.perf_counter() - t0:.0f} s: {err} "
                      f"| - | - | - | - | - | - |", flush=True)
                status = 1
                continue
            r = json.loads(line[len("RESULT "):])
            stages = ", ".join(f"{k} {v}" for k, v in r["stages"].items())
            print(f"| {r['backend']} | {r['device']} | {r['n']:,} | {r['init']} | {r['n_epochs']} | {r['seconds']} | "
                  f"{stages} | {'-' if r['warmup_seconds'] is None else r['warmup_seconds']} | {r['peak_rss_gb']} | "
                  f"{r.get('peak_gpu_gb', '-')} | "
                  f"{r.get('neighbourhood_preservation', '-')} | {r.get('cluster_purity', '-')} |", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({**r, "machine": info}) + "\n")
    print()
    print(f"load average after: {[round(x, 2) for x in os.getloadavg()]}")
    return status


if __name__ == "__main__":
    sys.exit(main())
