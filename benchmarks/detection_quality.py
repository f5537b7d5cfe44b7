"""Detection quality: how well the wGAN's scores find the embedded sample's injected oddities, next to baselines.

    python benchmarks/detection_quality.py                                   # medium sample, "cpu" model
    python benchmarks/detection_quality.py --size large --preset reference   # on a GPU
    python benchmarks/detection_quality.py --model data/models/wgan          # score with a trained checkpoint

Steps: build (or reuse) the simulated sample at ``--size`` (``ww_assets.simulation``; medium = 10 batches x 1,000
images, about 4% astrophysical oddities and 2% artifacts injected; images only unless ``--full-sample``); read every batch's cutouts
(``ww_assets.images.cutouts``: g, r, i -> Lupton RGB); train the wGAN + encoder on all of them, unsupervised, as the HSC
reference did (``ww_assets.model.training``, preset ``--preset``), or load ``--model``; score every image
(``ww_assets.scores.anomaly``, single pass, formula ``--formula``); then AUROC and average precision per score for all
injected images, astrophysical oddities, artifacts, and each injected class (negatives: normal images), using
the sample's truth.csv (read here only, never by scoring). Baselines on the same images:

* **isolation forest** (scikit-learn, 200 trees) on pixels block-averaged 4 x 4 (24 x 24 x 3 = 1,728 values);
* **PCA residual**: PCA (32 components) fitted on the same downsampled pixels of every image; the score is the
  squared reconstruction residual.

Targets (issue 6): anomaly-score AUROC for all injected oddities >= 0.9 and above both baselines. Prints the
machine and timings. Plain PyTorch / numpy / scikit-learn; no Dagster. ``--workdir`` keeps the sample and the
trained model between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ww_assets.scores.evaluation import detection_metrics
from ww_assets.images import cutouts as imaging
from ww_assets.machine import machine_info, torch_info  # noqa: E402

TARGET_AUROC = 0.9


def downsample(images: np.ndarray, factor: int = 4) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, 3 * H/f * W/f) block means in [0, 1]."""
    n, c, h, w = images.shape
    out = np.empty((n, c * (h // factor) * (w // factor)), np.float32)
    for s in range(0, n, 4096):
        block = images[s:s + 4096].astype(np.float32) / 255.0
        block = block.reshape(len(block), c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))
        out[s:s + len(block)] = block.reshape(len(block), -1)
    return out


def baselines(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    x = downsample(images)
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(x)
    iforest = -forest.score_samples(x)                        # larger = more anomalous
    pca = PCA(n_components=32, random_state=seed).fit(x)
    recon = pca.inverse_transform(pca.transform(x))
    residual = ((x - recon) ** 2).sum(axis=1)
    return {"isolation_forest": iforest.astype(np.float64), "pca_residual": residual.astype(np.float64)}


def read_sample(sample_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    images, catalogs = [], []
    for folder in sorted(p for p in (sample_dir / "cutouts").iterdir() if p.is_dir()):
        batch = imaging.read_cutout_folder(folder, folder.name)
        if len(batch.quarantine):
            print(f"  {folder.name}: {len(batch.quarantine)} quarantined: {batch.reason_counts()}")
        images.append(batch.images)
        catalogs.append(batch.catalog)
    return np.concatenate(images), pd.concat(catalogs, ignore_index=True)


def _n_images(size: str) -> int:
    from ww_assets.simulation.sample import SAMPLE_SIZES

    return SAMPLE_SIZES[size].total_images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", help="sample size: tiny, small, medium (default), large, or an int")
    p.add_argument("--seed", type=int, default=20211)
    p.add_argument("--preset", default="cpu", help="model preset to train (cpu, reference, ci)")
    p.add_argument("--model", default=None, help="score with this checkpoint folder instead of training")
    p.add_argument("--formula", default="hsc", choices=["hsc", "fanogan"])
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default=None, help="keep the sample and the trained model here between runs")
    p.add_argument("--full-sample", action="store_true", help="also simulate volunteers and thumbnails (slow)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from ww_assets.model.checkpoints import load_wgan, save_wgan
    from ww_assets.model.networks import WGANConfig, device_name, resolve_device
    from ww_assets.scores.anomaly import ScoreConfig, score_images
    from ww_assets.simulation.sample import ensure_sample
    from ww_assets.model.training import train

    size = int(args.size) if args.size.isdigit() else args.size
    device = resolve_device(args.device)
    machine = {**machine_info(), **torch_info(), "device": device_name(device)}
    print("machine:", json.dumps(machine))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ww-detect-"))
    workdir.mkdir(parents=True, exist_ok=True)
    timings = {}
    try:
        t0 = time.perf_counter()
        # Images only: the volunteer side (exports, thumbnails) is not needed here and takes tens of minutes at
        # medium size on two cores. This is another draw (same generator, label rates and seed) than the sample
        # the demo builds, since the subject fraction enters the plan; --full-sample builds that one.
        extra = {} if args.full_sample else {"subject_fraction": 16.5 / (size if isinstance(size, int) else
                                                                         _n_images(size)),
                                             "thumbnails": False}
        sample_dir = ensure_sample(workdir / "sample", size=size, seed=args.seed, **extra)
        timings["sample_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        images, catalog = read_sample(sample_dir)
        timings["read_s"] = time.perf_counter() - t0
        truth = pd.read_csv(sample_dir / "truth.csv", dtype={"object_id": str})
        counts = truth.groupby("label").size().to_dict()
        print(f"sample {args.size} (seed {args.seed}): {len(images)} images read in {timings['read_s']:.1f} s; "
              f"labels {counts}")

        model_dir = Path(args.model) if args.model else workdir / f"model-{args.preset}-{args.size}-{args.seed}"
        t0 = time.perf_counter()
        if (model_dir / "card.json").exists():
            wgan = load_wgan(model_dir, device=device)
            print(f"model: loaded {model_dir}")
        else:
            if args.model:
                raise SystemExit(f"--model {args.model}: no checkpoint there")
            config = WGANConfig.preset(args.preset)
            print(f"model: training preset {args.preset!r} on {len(images)} images (all of them, unsupervised) ...")
            last = [0.0]

            def progress(info) -> None:
                if time.perf_counter() - last[0] > 30:
                    last[0] = time.perf_counter()
                    print(f"  {info}")

            result = train(images, config, device=device, progress=progress)
            wgan = result.wgan
            save_wgan(wgan, model_dir, card=result.card())
            print(f"  trained in {sum(result.seconds.values()):.0f} s: {result.final_losses}")
        timings["model_s"] = time.perf_counter() - t0

        cfg = ScoreConfig(formula=args.formula, batch_size=256 if device.type == "cpu" else 1024,
                          precision="bf16" if device.type == "cuda" else "fp32", channels_last=device.type == "cuda")
        t0 = time.perf_counter()
        scored = score_images(wgan, images, cfg, device=device)
        timings["score_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = baselines(images)
        timings["baselines_s"] = time.perf_counter() - t0
        frame = pd.DataFrame({"image_id": catalog["image_id"], "image_score": scored.image_score,
                              "feature_score": scored.feature_score, "anomaly_score": scored.anomaly_score, **base})
        columns = ("image_score", "feature_score", "anomaly_score", "isolation_forest", "pca_residual")
        metrics = detection_metrics(frame, truth, score_columns=columns)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    auroc = metrics.pivot(index="target", columns="score", values="auroc")[list(columns)]
    ap = metrics.pivot(index="target", columns="score", values="average_precision")[list(columns)]
    n_pos = metrics.drop_duplicates("target").set_index("target")["n_pos"]
    order = ["all_injected", "astrophysical", "artifact"] + sorted(set(auroc.index) - {"all_injected",
                                                                                        "astrophysical", "artifact"})
    auroc, ap = auroc.reindex(order), ap.reindex(order)
    print(f"\nscores: {cfg.describe()} on {scored.device}; model {wgan.config.name} "
          f"(base_channels {wgan.config.base_channels})")
    print("\nAUROC (positives: target; negatives: normal images)")
    print(auroc.assign(n=n_pos.reindex(order)).round(3).to_string())
    print("\naverage precision")
    print(ap.assign(prevalence=metrics.drop_duplicates("target").set_index("target")["prevalence"]
                    .reindex(order)).round(3).to_string())
    head = auroc.loc["all_injected"]
    ok = head["anomaly_score"] >= TARGET_AUROC and head["anomaly_score"] > max(head["isolation_forest"],
                                                                               head["pca_residual"])
    print(f"\ntarget: anomaly-score AUROC (all injected) {head['anomaly_score']:.3f} >= {TARGET_AUROC} and above "
          f"isolation forest {head['isolation_forest']:.3f} and PCA residual {head['pca_residual']:.3f}: "
          f"{'MET' if ok else 'NOT MET'}")
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "| load average after:", [round(x, 2) for x in os.getloadavg()])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "timings": timings, "target_met": bool(ok),
                                               "metrics": metrics.to_dict(orient="records")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
