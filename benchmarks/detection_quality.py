"""Detection quality: does the machine score find oddities, including kinds it was never shown, better than a
generic outlier detector? With bootstrap intervals, per class, and the model's own gates.

    python benchmarks/detection_quality.py                         # the shipped model, medium sample seed 2
    python benchmarks/detection_quality.py --model data/models/wgan
    python benchmarks/detection_quality.py --train cpu --seed 3    # train a preset on the sample itself
    python benchmarks/detection_quality.py --size large --train reference --device cuda

1. **Sample**: the simulator at ``--size`` (medium: 10 x 1,000 images, about 4% astrophysical oddities and 2%
   artifacts injected) with ``--seed`` (default 2: the shipped model was trained on seed 1, so none of these
   galaxies was seen in training). Images only; the labels (truth.csv) are read here and by nothing that scores.
2. **Model**: ``--model`` (default: the shipped ``ww_assets/model/pretrained/wgan-cpu``), or ``--train PRESET``
   on this sample (unsupervised, as the HSC reference did).
3. **Gates** (``ww_assets.model.quality``) on up to 1,000 normal images: structure explained (>= 0.8) and realism
   (two-sample classifier AUROC <= 0.75).
4. **Scores** of every image with each ``--formulas`` (``hsc``, the default, and ``fanogan``: the published
   formulas; ``local``: noise-unit residual with a matched-filter peak), and three baselines on the same images:
   isolation forest (200 trees) and PCA residual (32 components) on 4 x 4 block-averaged pixels (1,728 values),
   and the local outlier factor (20 neighbours) on the same pixels.
5. **Injected classes**: AUROC (positives: the class; negatives: normal images) with a 95% percentile bootstrap
   interval, and average precision, for all injected images, astrophysical oddities, artifacts, each class.
6. **Novel oddities** (``ww_assets.simulation.novel``: kinds the simulation never draws, injected into normal
   galaxies of this sample in flux space, each paired with its untouched twin; ``--pairs`` per kind): the paired
   AUROC (share of pairs where the changed image scores higher; ties count one half) with a paired bootstrap
   interval, per kind and overall.

Targets (issue 14), for the default score (``ScoreConfig().formula``): AUROC >= 0.92 for all injected images, >= 0.85 for every
astrophysical class, and above every baseline (the lower end of its interval above the baseline's AUROC), overall
and on the novel oddities. Prints the machine, the tables and MET / NOT MET; ``--plot`` draws the AUROCs with
their intervals; ``--json`` keeps everything. Plain PyTorch / numpy / scikit-learn; no Dagster.
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

from ww_assets.machine import machine_info, torch_info  # noqa: E402

TARGET_ALL = 0.92
TARGET_CLASS = 0.85
CONFIDENCE = 0.95
BASELINES = ("isolation_forest", "pca_residual", "local_outlier_factor")


def downsample(images: np.ndarray, factor: int = 4) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, 3 * H/f * W/f) block means in [0, 1]."""
    n, c, h, w = images.shape
    out = np.empty((n, c * (h // factor) * (w // factor)), np.float32)
    for s in range(0, n, 4096):
        block = images[s:s + 4096].astype(np.float32) / 255.0
        block = block.reshape(len(block), c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))
        out[s:s + len(block)] = block.reshape(len(block), -1)
    return out


def baselines(images: np.ndarray, extra: np.ndarray | None = None, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Baseline scores (larger = more anomalous) of ``images``, fitted on them (unsupervised, as the model was
    trained on its sample); and the same fitted detectors' scores of ``extra`` images (the novel pairs)."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    x = downsample(images)
    xe = downsample(extra) if extra is not None and len(extra) else np.empty((0, x.shape[1]), np.float32)
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(x)
    pca = PCA(n_components=32, random_state=seed).fit(x)
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True, n_jobs=-1).fit(x)

    def residual(v):
        return ((v - pca.inverse_transform(pca.transform(v))) ** 2).sum(axis=1) if len(v) else np.empty(0)

    def score(v):
        if not len(v):
            return {k: np.empty(0) for k in BASELINES}
        return {"isolation_forest": -forest.score_samples(v), "pca_residual": residual(v),
                "local_outlier_factor": -lof.score_samples(v)}

    # the sample's own LOF: each image against the others (novelty=True would count an image as its own
    # neighbour); the extra images against the whole sample
    own = score(x)
    own["local_outlier_factor"] = -LocalOutlierFactor(n_neighbors=20, n_jobs=-1).fit(x).negative_outlier_factor_
    return ({k: np.asarray(v, np.float64) for k, v in own.items()},
            {k: np.asarray(v, np.float64) for k, v in score(xe).items()})


def read_sample(sample_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(RGB uint8 images, catalog with sky noise and the folder each image came from)."""
    from ww_assets.images.cutouts import read_batch_folders

    images, catalog, quarantined = read_batch_folders(sample_dir / "cutouts")
    for batch, reasons in quarantined.items():
        print(f"  {batch}: quarantined {reasons}")
    return images, catalog


def band_fluxes(catalog: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """(n, 3, H, W) float32 g, r, i fluxes of catalog ``rows``, as the simulator wrote them: one
    ``bands_gri.npy`` per batch folder (with its ``catalog.csv`` order) or ``<id>_<band>.fits`` files."""
    from astropy.io import fits

    out = []
    cache: dict[str, tuple[np.ndarray, dict[str, int]] | None] = {}
    for _, row in catalog.iloc[rows].iterrows():
        folder, image_id = Path(row["folder"]), str(row["image_id"])
        if str(folder) not in cache:
            npy = folder / "bands_gri.npy"
            if npy.exists():
                ids = pd.read_csv(folder / "catalog.csv", dtype=str).iloc[:, 0].tolist()
                cache[str(folder)] = (np.load(npy, mmap_mode="r"), {k: i for i, k in enumerate(ids)})
            else:
                cache[str(folder)] = None
        hit = cache[str(folder)]
        if hit is not None:
            out.append(np.asarray(hit[0][hit[1][image_id]], np.float32))
        else:
            out.append(np.stack([fits.getdata(folder / f"{image_id}_{b}.fits").astype(np.float32)
                                 for b in "gri"]))
    return np.stack(out)


def auroc_with_interval(pos: np.ndarray, neg: np.ndarray, rng, n_resamples: int) -> tuple[float, float, float]:
    from ww_assets.analysis.statistics import auroc_statistic, bootstrap_interval

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan"), float("nan"), float("nan")
    point = float(auroc_statistic(pos, neg))
    lo, hi = bootstrap_interval([pos, neg], auroc_statistic, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                rng=rng, paired=False)
    return point, lo, hi


def paired_auroc(changed: np.ndarray, twin: np.ndarray, rng, n_resamples: int) -> tuple[float, float, float]:
    """Share of pairs where the changed image scores above its twin (ties: one half), with a paired bootstrap."""
    from ww_assets.analysis.statistics import bootstrap_interval

    def stat(a, b, axis=-1):
        return np.mean((a > b) + 0.5 * (a == b), axis=axis)

    changed, twin = np.asarray(changed, float), np.asarray(twin, float)
    if not len(changed):
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_interval([changed, twin], stat, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                rng=rng, paired=True)
    return float(stat(changed, twin)), lo, hi


def class_table(scores: pd.DataFrame, truth: pd.DataFrame, columns: list[str], rng, n_resamples: int
                ) -> pd.DataFrame:
    """Rows (target, kind, score, n_pos, n_neg, auroc, lo, hi, average_precision) for the injected classes.
    ``truth``: as ``ww_assets.scores.evaluation.read_truth`` returns it."""
    from sklearn.metrics import average_precision_score

    m = scores.assign(image_id=scores["image_id"].astype(str)).merge(truth, on="image_id", how="inner")
    odd, art = m["is_odd"].to_numpy(bool), m["is_artifact"].to_numpy(bool)
    normal = ~odd & ~art
    targets = {"all_injected": ("all", odd | art), "astrophysical": ("all", odd), "artifact": ("all", art)}
    for label in sorted(set(m.loc[odd | art, "label"])):
        targets[label] = ("astrophysical" if odd[(m["label"] == label).to_numpy()].any() else "artifact",
                          (m["label"] == label).to_numpy())
    rows = []
    for target, (kind, pos) in targets.items():
        if not pos.any():
            continue
        keep = pos | normal
        for col in columns:
            v = m[col].to_numpy(float)
            point, lo, hi = auroc_with_interval(v[pos], v[normal], rng, n_resamples)
            rows.append({"target": target, "kind": kind, "score": col, "n_pos": int(pos.sum()),
                         "n_neg": int(normal.sum()), "auroc": point, "lo": lo, "hi": hi,
                         "average_precision": float(average_precision_score(pos[keep], v[keep]))})
    return pd.DataFrame(rows)


def novel_table(changed: dict[str, np.ndarray], twin: dict[str, np.ndarray], kinds: list[str], rng,
                n_resamples: int) -> pd.DataFrame:
    kinds_arr = np.asarray(kinds)
    rows = []
    for target in ["all_novel", *dict.fromkeys(kinds)]:
        sel = np.ones(len(kinds_arr), bool) if target == "all_novel" else kinds_arr == target
        for col in changed:
            point, lo, hi = paired_auroc(changed[col][sel], twin[col][sel], rng, n_resamples)
            rows.append({"target": target, "kind": "novel", "score": col, "n_pos": int(sel.sum()),
                         "n_neg": int(sel.sum()), "auroc": point, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, columns: list[str], path: Path, title: str) -> Path:
    """AUROC per target (rows) and score (markers), 95% intervals as bars; chance at 0.5."""
    from ww_assets.plotting.style import new_figure, save_figure

    targets = list(dict.fromkeys(table["target"]))
    fig = new_figure(8.0, max(4.0, 0.32 * len(targets) + 1.5))
    ax = fig.add_subplot()
    offsets = np.linspace(-0.3, 0.3, len(columns))
    for off, col in zip(offsets, columns):
        t = table[table["score"] == col].set_index("target").reindex(targets)
        y = np.arange(len(targets)) + off
        ax.errorbar(t["auroc"], y, xerr=[t["auroc"] - t["lo"], t["hi"] - t["auroc"]], fmt="o", ms=3.5, capsize=2,
                    lw=1, label=col)
    n = table.drop_duplicates("target").set_index("target")["n_pos"].reindex(targets)
    ax.set_yticks(np.arange(len(targets)), [f"{t} (n = {k})" for t, k in zip(targets, n)], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    low = float(np.nanmin(table["lo"])) if table["lo"].notna().any() else 0.3
    ax.set_xlim(min(0.3, np.floor(low * 20) / 20), 1.02)   # every interval inside, a point at 1.0 whole
    ax.set_xlabel(f"AUROC (bars: {CONFIDENCE:.0%} bootstrap interval; novel kinds: paired, vs the untouched twin)")
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside right center", fontsize=8, title="score")
    return save_figure(fig, path)


def _verdict(table: pd.DataFrame, default: str) -> tuple[bool, list[str]]:
    lines, ok = [], True
    d = table[table["score"] == default].set_index("target")

    def check(cond: bool, text: str) -> None:
        nonlocal ok
        ok &= bool(cond)
        lines.append(f"  {'MET    ' if cond else 'NOT MET'} {text}")

    head = d.loc["all_injected"]
    check(head["auroc"] >= TARGET_ALL, f"all injected: AUROC {head['auroc']:.3f} >= {TARGET_ALL}")
    for target, row in d[d["kind"] == "astrophysical"].iterrows():
        check(row["auroc"] >= TARGET_CLASS, f"{target}: AUROC {row['auroc']:.3f} >= {TARGET_CLASS} (n = {row['n_pos']})")
    for target in ("all_injected", "all_novel"):
        if target not in d.index:
            continue
        best = table[(table["target"] == target) & table["score"].isin(BASELINES)].sort_values("auroc").iloc[-1]
        check(d.loc[target, "lo"] > best["auroc"],
              f"{target}: interval [{d.loc[target, 'lo']:.3f}, {d.loc[target, 'hi']:.3f}] above the best baseline "
              f"({best['score']} {best['auroc']:.3f})")
    return ok, lines


def obtain_model(args, images: np.ndarray, noise: np.ndarray, device, workdir: Path):
    """The model to judge: ``--train PRESET`` on these images (kept in the work folder), ``--model`` or the shipped
    one; in eval mode. Returns (model, its folder)."""
    from ww_assets.model.checkpoints import load_wgan, save_wgan
    from ww_assets.model.networks import WGANConfig
    from ww_assets.model.selection import PRETRAINED_DIR
    from ww_assets.model.training import train

    if args.train:
        model_dir = workdir / f"model-{args.train}-{args.size}-{args.seed}"
        if (model_dir / "card.json").exists():
            return load_wgan(model_dir, device=device).eval(), model_dir
        print(f"model: training preset {args.train!r} on all {len(images)} images, unsupervised ...")
        result = train(images, WGANConfig.preset(args.train), device=device, noise=noise,
                       progress=lambda info: print(f"  {info}") if info.step % 250 == 0 else None)
        save_wgan(result.wgan, model_dir, card=result.card())
        return result.wgan.eval(), model_dir
    model_dir = Path(args.model) if args.model else PRETRAINED_DIR
    return load_wgan(model_dir, device=device).eval(), model_dir


def gates(wgan, images: np.ndarray, noise: np.ndarray, normal_idx: np.ndarray, rng) -> dict:
    """Structure explained and realism on up to 1,000 of the normal images."""
    from ww_assets.model import quality

    gate_idx = rng.choice(normal_idx, size=min(1000, len(normal_idx)), replace=False)
    gate_idx.sort()
    se = quality.model_structure_explained(wgan, images[gate_idx], noise[gate_idx])
    realism = quality.model_realism(wgan, images[gate_idx], noise[gate_idx], n=len(gate_idx))
    print(f"gates on {len(gate_idx)} normal images: structure explained {se.value:.3f} (gate >= "
          f"{quality.STRUCTURE_GATE}), realism AUROC {realism:.3f} (gate <= {quality.REALISM_GATE})")
    return {"structure_explained": se.as_dict(), "realism_auroc": realism}


def novel_pairs(catalog: pd.DataFrame, normal_idx: np.ndarray, n_per_kind: int, rng, image_shape
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(changed RGB, twin RGB, their sky noise (channel order i, r, g), kind of each pair): ``n_per_kind`` pairs
    of each novel kind, injected into normal galaxies of the sample in flux space."""
    from ww_assets.images.lupton import lupton_rgb
    from ww_assets.images.sky import sky_noise
    from ww_assets.simulation.novel import make_pairs

    if not n_per_kind:
        empty = np.empty((0, *image_shape), np.uint8)
        return empty, empty, np.empty((0, 3), np.float32), []
    pick = np.sort(rng.choice(normal_idx, size=min(len(normal_idx), n_per_kind * 8), replace=False))
    twins, changed, kinds, _ = make_pairs(band_fluxes(catalog, pick), n_per_kind, seed=1)
    pair_noise = sky_noise(twins)[:, [2, 1, 0]].astype(np.float32)  # g, r, i -> channel order i, r, g
    return lupton_rgb(changed, "gri"), lupton_rgb(twins, "gri"), pair_noise, kinds


def score_models(wgan, formulas: list[str], images, noise, pairs, device
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({score name: anomaly score of every image}, the same of the changed and of the twin pair images), for
    each formula (the default one named so)."""
    import torch

    from ww_assets.scores.anomaly import ScoreConfig, score_images

    changed_rgb, twin_rgb, pair_noise, kinds = pairs
    scores, changed, twin = {}, {}, {}
    for formula in formulas:
        cfg = ScoreConfig(formula=formula, batch_size=256 if device.type == "cpu" else 1024)
        name = f"{formula}" + (" (default)" if formula == ScoreConfig().formula else "")
        with torch.inference_mode():
            scores[name] = score_images(wgan, images, cfg, device=device, noise=noise).anomaly_score
            if len(kinds):
                changed[name] = score_images(wgan, changed_rgb, cfg, device=device, noise=pair_noise).anomaly_score
                twin[name] = score_images(wgan, twin_rgb, cfg, device=device, noise=pair_noise).anomaly_score
    return scores, changed, twin


def score_baselines(images, pairs, scores: dict, changed: dict, twin: dict) -> None:
    """Add the baselines' scores of the images and of the pair images to the three dicts of ``score_models``."""
    changed_rgb, twin_rgb, _, kinds = pairs
    base, base_pairs = baselines(images, np.concatenate([changed_rgb, twin_rgb]) if len(kinds) else None)
    for key, values in base.items():
        scores[key] = values
        if len(kinds):
            changed[key], twin[key] = np.split(base_pairs[key], 2)


def report(table: pd.DataFrame, columns: list[str]) -> bool:
    """Print the AUROC and average-precision tables and the verdict on the targets; returns whether all are met."""
    default = next((c for c in columns if c.endswith("(default)")), columns[0])
    show = table.assign(auroc=lambda d: d.apply(lambda r: f"{r['auroc']:.3f} [{r['lo']:.2f}, {r['hi']:.2f}]",
                                                axis=1))
    wide = show.pivot(index="target", columns="score", values="auroc").reindex(
        list(dict.fromkeys(table["target"])))[columns]
    n = table.drop_duplicates("target").set_index("target")["n_pos"]
    print(f"\nAUROC [{CONFIDENCE:.0%} bootstrap interval]; injected classes against the normal images, novel kinds "
          "paired with their untouched twins")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(wide.assign(n=n.reindex(wide.index)).to_string())
        if "average_precision" in table:
            ap = table.dropna(subset=["average_precision"]).pivot(index="target", columns="score",
                                                                  values="average_precision")
            print("\naverage precision (injected classes)")
            print(ap.reindex([t for t in wide.index if t in ap.index])[columns].round(3).to_string())
    ok, lines = _verdict(table, default)
    print(f"\ntargets for the default score ({default}):")
    print("\n".join(lines))
    print(f"overall: {'MET' if ok else 'NOT MET'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", help="sample size: tiny, small, medium (default), large, or an int")
    p.add_argument("--seed", type=int, default=2, help="sample seed (the shipped model was trained on seed 1)")
    p.add_argument("--sample", default=None, help="use this simulated sample folder as it is (with its truth.csv)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the shipped pretrained model)")
    p.add_argument("--train", default=None, metavar="PRESET", help="train this preset on the sample instead")
    p.add_argument("--formulas", default="local,hsc,fanogan")
    p.add_argument("--pairs", type=int, default=20, help="novel-oddity pairs per kind (0: none)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per interval")
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default=None, help="keep the sample (and a trained model) here between runs")
    p.add_argument("--plot", default=None, help="write the AUROC figure here (PNG)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from ww_assets.model.data import catalog_noise, fill_missing_noise
    from ww_assets.model.networks import device_name, resolve_device
    from ww_assets.scores.evaluation import read_truth
    from ww_assets.simulation.sample import SAMPLE_SIZES, ensure_sample

    size = int(args.size) if args.size.isdigit() else args.size
    device = resolve_device(args.device)
    machine = {**machine_info(), **torch_info(), "device": device_name(device)}
    print("machine:", json.dumps(machine))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ww-detect-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    timings: dict[str, float] = {}
    formulas = [f.strip() for f in args.formulas.split(",") if f.strip()]
    try:
        t0 = time.perf_counter()
        n_images = size if isinstance(size, int) else SAMPLE_SIZES[size].total_images
        sample_dir = Path(args.sample) if args.sample else ensure_sample(
            workdir / f"sample-{args.size}-{args.seed}", size=size, seed=args.seed,
            subject_fraction=16.5 / n_images, thumbnails=False)  # images only: no volunteer side needed here
        images, catalog = read_sample(sample_dir)
        noise = fill_missing_noise(catalog_noise(catalog), images)  # estimated where the bands had too little sky
        truth = read_truth(sample_dir / "truth.csv")
        timings["sample_s"] = time.perf_counter() - t0
        print(f"sample {sample_dir}: {len(images)} images; labels "
              f"{truth.groupby('label').size().to_dict()}")

        t0 = time.perf_counter()
        wgan, model_dir = obtain_model(args, images, noise, device, workdir)
        timings["model_s"] = time.perf_counter() - t0
        print(f"model: {model_dir} ({wgan.config.name}, base_channels {wgan.config.base_channels}, output "
              f"{wgan.config.output}, observation {wgan.config.observation})")

        t0 = time.perf_counter()
        ids = catalog["image_id"].astype(str).to_numpy()
        labels = truth.set_index("image_id")["label"]
        normal_idx = np.flatnonzero((pd.Series(ids).map(labels).fillna("normal") == "normal").to_numpy())
        measured = gates(wgan, images, noise, normal_idx, rng)
        timings["gates_s"] = time.perf_counter() - t0

        pairs = novel_pairs(catalog, normal_idx, args.pairs, rng, images.shape[1:])
        t0 = time.perf_counter()
        scores, changed, twin = score_models(wgan, formulas, images, noise, pairs, device)
        timings["score_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        score_baselines(images, pairs, scores, changed, twin)
        timings["baselines_s"] = time.perf_counter() - t0
        columns = list(scores)
        table = class_table(pd.DataFrame({"image_id": ids, **scores}), truth, columns, rng, args.bootstrap)
        if len(pairs[3]):
            table = pd.concat([table, novel_table(changed, twin, pairs[3], rng, args.bootstrap)], ignore_index=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    ok = report(table, columns)
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()},
          "| load average after:", [round(x, 2) for x in os.getloadavg()])
    if args.plot:
        plot(table, columns, Path(args.plot), f"Detection on sample {args.size} seed {args.seed}: model "
             f"{wgan.config.name}; SE {measured['structure_explained']['value']:.2f}, realism "
             f"{measured['realism_auroc']:.2f}")
        print(f"figure: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "timings": timings, "gates": measured,
                                               "target_met": bool(ok), "table": table.to_dict(orient="records")},
                                              indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
