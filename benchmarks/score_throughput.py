"""Scoring throughput: images/s of the anomaly scorer, model-only and end to end, on CPU and CUDA.

    python benchmarks/score_throughput.py                       # every device present, sizes for each
    python benchmarks/score_throughput.py --device cuda --batch-sizes 1024,2048 --e2e-images 262144
    python benchmarks/score_throughput.py --device cpu --presets cpu --quick

What is measured (each line prints the device, precision, batch size and peak memory):

* **model-only**: uint8 cutouts already resident on the device; ``ww_assets.scores.anomaly.score_images`` runs the
  encoder, the generator and the critic's features (on x and G(E(x)) in one call) and the residuals; timed from
  the call to the scores back on the host. Single pass (z = E(x)). On CUDA: fp32 (TF32 convolutions, PyTorch's
  default), bf16 autocast + channels-last (the asset's default there), and the same + torch.compile.
* **end to end**: a ``cutouts.npy`` (uint8, N x 3 x 96 x 96) and ``catalog.parquet`` on disk -> memory map ->
  background reader into (on CUDA, pinned) chunk buffers -> scores -> ``scores/<batch>/`` written atomically
  (scores.parquet, anomaly_scores.csv, latent_vectors.npy, score_config.json), exactly what the
  ``anomaly_scores`` asset does. ``--cold`` first evicts the file from the page cache (posix_fadvise).
* **refinement**: the HSC reference's 10 Adam steps on z per image (``--refine-steps``).
* **reduced precision**: scores with bf16 autocast (+ channels-last on CUDA) against strict fp32 (TF32 off) on
  the same images. The tolerance (TOLERANCE below) is: per image, the anomaly score's relative difference at
  the 99th percentile <= 1% and the worst <= 3%; Spearman rank correlation of the anomaly scores >= 0.999; and
  >= 95% of the fp32 top-1% most anomalous images also in the bf16 top 1%. The asset's precision "auto" uses
  bf16 on CUDA; this check says whether that is within tolerance for the model given (``--model``).

Weights: ``--model DIR`` loads a checkpoint folder (weights only), e.g. ``data/models/wgan`` after ``make demo``;
otherwise the architecture preset(s) with seeded random weights (the speed does not depend on the weights; the
precision check is only meaningful for a trained model). Images: ``--images cutouts.npy`` or synthetic Lupton
RGB galaxies. Plain PyTorch + numpy; no Dagster. Runs unchanged on torch 2.11 / Python 3.12.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ww_assets.scores import release  # noqa: E402
from ww_assets.images import cutouts as imaging
from ww_assets.machine import machine_info, torch_info  # noqa: E402
from ww_assets.model.networks import WGAN, WGANConfig, device_name  # noqa: E402
from ww_assets.scores.anomaly import ScoreConfig, score_images  # noqa: E402
from ww_assets.storage import atomic_dir  # noqa: E402

TOLERANCE = {"anomaly_rel_p99": 0.01, "anomaly_rel_max": 0.03, "spearman_min": 0.999, "top1pct_overlap_min": 0.95}

DEFAULTS = {
    # device: (batch sizes, model-only images, end-to-end images, refinement images, tolerance images)
    "cuda": ([512, 1024, 2048], 65536, 262144, 16384, 8192),
    "cpu": ([64, 256], 512, 1024, 96, 256),
}


# --------------------------------------------------------------------------------------------------------------
# machine and memory
# --------------------------------------------------------------------------------------------------------------

def machine() -> dict:
    return {**machine_info(), **torch_info(), "numpy": np.__version__}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB GPU (peak allocated)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # Linux: KiB, process lifetime peak
    return f"{rss_kib / 2**10:,.0f} MiB RSS (process peak so far)"


# --------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------

def synthetic_cutouts(n: int, seed: int = 0) -> np.ndarray:
    """Lupton RGB uint8 (n, 3, 96, 96) of noisy elliptical galaxies with random colour, size and position."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96].astype(np.float32)
    out = np.empty((n, 3, 96, 96), np.uint8)
    step = 512
    for s in range(0, n, step):
        m = min(step, n - s)
        x0, y0 = rng.uniform(38, 58, (2, m, 1, 1)).astype(np.float32)
        sx, sy = rng.uniform(2, 10, (2, m, 1, 1)).astype(np.float32)
        blob = np.exp(-((xx - x0) ** 2 / (2 * sx**2) + (yy - y0) ** 2 / (2 * sy**2)))
        flux = rng.uniform(0.3, 4.0, (m, 3, 1, 1)).astype(np.float32)
        bands = rng.normal(0, 0.04, (m, 3, 96, 96)).astype(np.float32) + blob[:, None] * flux
        out[s:s + m] = imaging.lupton_rgb(bands)
    return out


def load_images(path: str | None, n: int) -> np.ndarray:
    if path is None:
        return synthetic_cutouts(n)
    arr = np.load(path, mmap_mode="r")
    reps = int(np.ceil(n / len(arr)))
    return np.ascontiguousarray(np.concatenate([arr] * reps)[:n]) if reps > 1 else np.ascontiguousarray(arr[:n])


def make_model(preset: str, model_dir: str | None, device: torch.device) -> WGAN:
    if model_dir:
        from ww_assets.model.checkpoints import load_wgan

        return load_wgan(model_dir, device=device)
    torch.manual_seed(0)
    return WGAN(WGANConfig.preset(preset)).to(device).eval()


def modes_for(device: torch.device, compile_too: bool) -> list[tuple[str, ScoreConfig]]:
    """(label, ScoreConfig without batch size) for each precision mode measured on this device."""
    if device.type == "cuda":
        modes = [("fp32 (TF32 convs, PyTorch default)", ScoreConfig(precision="fp32")),
                 ("bf16 autocast + channels-last", ScoreConfig(precision="bf16", channels_last=True))]
        if compile_too:
            modes.append(("bf16 + channels-last + torch.compile",
                          ScoreConfig(precision="bf16", channels_last=True, compile=True)))
        return modes
    return [("fp32", ScoreConfig(precision="fp32")), ("bf16 autocast", ScoreConfig(precision="bf16"))]


def _with(cfg: ScoreConfig, **changes) -> ScoreConfig:
    return ScoreConfig.from_dict({**cfg.to_dict(), **changes})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------------------------

def model_only(model: WGAN, images: np.ndarray, device: torch.device, cfg: ScoreConfig, repeats: int) -> dict:
    data = torch.from_numpy(images).to(device)                           # resident on the device
    warm = data[: min(len(data), 2 * cfg.batch_size)]
    score_images(model, warm, cfg, device=device)                        # cudnn autotune, compile, allocator
    reset_peak(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        result = score_images(model, data, cfg, device=device)
        times.append(time.perf_counter() - t0)
    assert np.isfinite(result.anomaly_score).all()
    best = min(times)
    return {"images": len(data), "seconds": round(best, 4), "images_per_s": round(len(data) / best, 1),
            "median_images_per_s": round(len(data) / float(np.median(times)), 1), "peak_memory": peak_memory(device)}


def end_to_end(model: WGAN, images: np.ndarray, device: torch.device, cfg: ScoreConfig, workdir: Path,
               chunk: int, cold: bool) -> dict:
    batch = "bench_batch"
    src = workdir / "images" / batch
    n = len(images)
    ids = np.char.add("bench", np.arange(n).astype(str))
    import pandas as pd

    catalog = pd.DataFrame({"image_id": ids.astype(str), "batch": batch, "row": np.arange(n, dtype=np.int64),
                            "source_path": "synthetic", "ra": np.nan, "dec": np.nan})
    quarantine = imaging.empty_batch(batch).quarantine
    with atomic_dir(src) as tmp:
        imaging.write_cutout_batch(imaging.CutoutBatch(batch, images, catalog, quarantine), tmp)
    if cold and hasattr(os, "posix_fadvise"):
        fd = os.open(src / imaging.CUTOUTS_FILE, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    out = workdir / "scores" / batch
    reset_peak(device)
    t0 = time.perf_counter()
    arr, cat = imaging.load_cutouts(src)
    img, feat, anom, lat, score_s = imaging.score_cutouts(model, arr, cfg, device, chunk=chunk)
    t1 = time.perf_counter()
    table = release.ScoreTable(cat["image_id"].to_numpy(), img, feat, anom, lat)
    with atomic_dir(out) as tmp:
        release.write_scores_folder(tmp, batch, table, {"source": "benchmark", **cfg.to_dict()})
    t2 = time.perf_counter()
    total = t2 - t0
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"images": n, "seconds": round(total, 3), "images_per_s": round(n / total, 1),
            "read_and_score_s": round(t1 - t0, 3), "write_s": round(t2 - t1, 3), "chunk": chunk,
            "page_cache": "cold" if cold else "warm", "output_mib": round(size / 2**20, 1),
            "peak_memory": peak_memory(device)}


def precision_check(model: WGAN, images: np.ndarray, device: torch.device, batch: int) -> dict:
    """bf16 (+ channels-last on CUDA) scores against strict fp32 scores of the same images."""
    import pandas as pd

    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = score_images(model, images, ScoreConfig(batch_size=batch, precision="fp32"), device=device)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    low = score_images(model, images, ScoreConfig(batch_size=batch, precision="bf16",
                                                  channels_last=device.type == "cuda"), device=device)
    out: dict = {"images": len(images)}
    for name in ("image_score", "feature_score", "anomaly_score"):
        a, b = getattr(ref, name), getattr(low, name)
        rel = np.abs(b - a) / np.maximum(np.abs(a), 1e-12)
        out[name] = {"rel_median": float(np.median(rel)), "rel_p99": float(np.percentile(rel, 99)),
                     "rel_max": float(rel.max())}
    a, b = pd.Series(ref.anomaly_score), pd.Series(low.anomaly_score)
    out["spearman_anomaly"] = float(a.corr(b, method="spearman"))
    k = max(1, len(a) // 100)
    top_a, top_b = set(np.argsort(-a.to_numpy())[:k]), set(np.argsort(-b.to_numpy())[:k])
    out["top1pct_overlap"] = len(top_a & top_b) / k
    out["latent_max_abs_diff"] = float(np.abs(ref.latents - low.latents).max())
    out["within_tolerance"] = bool(out["anomaly_score"]["rel_p99"] <= TOLERANCE["anomaly_rel_p99"]
                                   and out["anomaly_score"]["rel_max"] <= TOLERANCE["anomaly_rel_max"]
                                   and out["spearman_anomaly"] >= TOLERANCE["spearman_min"]
                                   and out["top1pct_overlap"] >= TOLERANCE["top1pct_overlap_min"])
    return out


# --------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="all", help="cpu, cuda, or all (every device present; default)")
    p.add_argument("--presets", default=None, help="architecture presets, comma-separated (default: reference; "
                                                    "on CPU reference,cpu)")
    p.add_argument("--model", default=None, help="a checkpoint folder to load instead of random weights")
    p.add_argument("--images", default=None, help="a cutouts.npy to score (else synthetic galaxies)")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default per device)")
    p.add_argument("--model-images", type=int, default=None)
    p.add_argument("--e2e-images", type=int, default=None)
    p.add_argument("--refine-images", type=int, default=None)
    p.add_argument("--refine-steps", type=int, default=10)
    p.add_argument("--tolerance-images", type=int, default=None)
    p.add_argument("--chunk", type=int, default=8192, help="end-to-end read chunk (images)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the bf16 + torch.compile mode (CUDA)")
    p.add_argument("--cold", action="store_true", help="end to end with the cutouts evicted from the page cache")
    p.add_argument("--quick", action="store_true", help="a quarter of the default sizes")
    p.add_argument("--workdir", default=None, help="where the end-to-end files go (default: a temp folder)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)

    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda") or args.device.startswith("cuda:"):
        if torch.cuda.is_available():
            devices.append(torch.device(args.device) if args.device.startswith("cuda:") else torch.device("cuda", 0))
        elif args.device != "all":
            print("CUDA asked for but not available to this PyTorch", file=sys.stderr)
            return 2
    info = machine()
    print("machine:", json.dumps(info))
    report: dict = {"machine": info, "tolerance": TOLERANCE, "runs": []}
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ww-score-bench-"))
    try:
        for device in devices:
            torch.backends.cudnn.benchmark = True
            sizes, n_model, n_e2e, n_refine, n_tol = DEFAULTS[device.type]
            if args.quick:
                n_model, n_e2e, n_refine, n_tol = (max(64, x // 4) for x in (n_model, n_e2e, n_refine, n_tol))
            batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else sizes
            n_model = args.model_images or n_model
            n_e2e = args.e2e_images or n_e2e
            n_refine = args.refine_images or n_refine
            n_tol = args.tolerance_images or n_tol
            presets = (args.presets or ("reference" if device.type == "cuda" else "reference,cpu")).split(",")
            if args.model:
                presets = ["checkpoint"]
            images = load_images(args.images, max(n_model, n_e2e, n_refine, n_tol))
            for preset in presets:
                model = make_model(preset, args.model, device)
                arch = (f"{model.config.name}: base_channels {model.config.base_channels}, kernel "
                        f"{model.config.kernel_size}, latent {model.config.latent_dim}, "
                        f"{sum(p.numel() for p in model.parameters()):,} parameters")
                print(f"\n== {device_name(device)} | model {arch} | weights "
                      f"{'from ' + args.model if args.model else 'random (seeded)'}")
                for label, base in modes_for(device, not args.no_compile):
                    for bs in batch_sizes:
                        try:
                            r = model_only(model, images[:n_model], device, _with(base, batch_size=bs),
                                           args.repeats)
                        except Exception as exc:  # noqa: BLE001 - report and go on (e.g. compile, OOM)
                            print(f"model-only   {label:<40} batch {bs:>5}: FAILED {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]}")
                            report["runs"].append({"kind": "model-only", "device": device_name(device),
                                                   "precision": label, "batch_size": bs, "error": repr(exc)})
                            continue
                        print(f"model-only   {label:<40} batch {bs:>5}: {r['images_per_s']:>10,.0f} images/s "
                              f"({r['images']} images, {r['seconds']} s best of {args.repeats}); {r['peak_memory']}")
                        report["runs"].append({"kind": "model-only", "device": device_name(device), "model": arch,
                                               "precision": label, "batch_size": bs, **r})
                # end to end: the asset's default on this device (bf16 + CL on CUDA, fp32 on CPU)
                e2e_label, e2e_base = modes_for(device, False)[1 if device.type == "cuda" else 0]
                bs = max(batch_sizes)
                r = end_to_end(model, images[:n_e2e], device, _with(e2e_base, batch_size=bs), workdir,
                               min(args.chunk, n_e2e), args.cold)
                print(f"end-to-end   {e2e_label:<40} batch {bs:>5}: {r['images_per_s']:>10,.0f} images/s "
                      f"({r['images']} images: read+score {r['read_and_score_s']} s, write {r['write_s']} s, "
                      f"{r['output_mib']} MiB out, page cache {r['page_cache']}); {r['peak_memory']}")
                report["runs"].append({"kind": "end-to-end", "device": device_name(device), "model": arch,
                                       "precision": e2e_label, "batch_size": bs, **r})
                shutil.rmtree(workdir / "images", ignore_errors=True)
                shutil.rmtree(workdir / "scores", ignore_errors=True)
                # refinement (the HSC reference's Adam steps on z)
                cfg = _with(e2e_base, batch_size=min(max(batch_sizes), 512), refine_steps=args.refine_steps)
                r = model_only(model, images[:n_refine], device, cfg, 1)
                print(f"refinement   {e2e_label:<40} {args.refine_steps} Adam steps, batch {cfg.batch_size}: "
                      f"{r['images_per_s']:>10,.0f} images/s ({r['images']} images); {r['peak_memory']}")
                report["runs"].append({"kind": "refinement", "device": device_name(device), "model": arch,
                                       "precision": e2e_label, "refine_steps": args.refine_steps, **r})
                # reduced precision against strict fp32
                tol = precision_check(model, images[:n_tol], device, min(max(batch_sizes), 1024))
                print(f"precision    bf16{' + channels-last' if device.type == 'cuda' else ''} vs strict fp32 on "
                      f"{tol['images']} images: anomaly rel. diff median {tol['anomaly_score']['rel_median']:.2e}, "
                      f"p99 {tol['anomaly_score']['rel_p99']:.2e}, max {tol['anomaly_score']['rel_max']:.2e}; "
                      f"feature p99 {tol['feature_score']['rel_p99']:.2e}; image p99 "
                      f"{tol['image_score']['rel_p99']:.2e}; Spearman {tol['spearman_anomaly']:.6f}; top-1% "
                      f"overlap {tol['top1pct_overlap']:.2f} -> "
                      f"{'WITHIN' if tol['within_tolerance'] else 'OUTSIDE'} tolerance {TOLERANCE}")
                report["runs"].append({"kind": "precision", "device": device_name(device), "model": arch, **tol})
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nload average after:", [round(x, 2) for x in os.getloadavg()])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
