"""Reproduce the small pretrained CPU model shipped in data/pretrained/wgan-cpu/ (see README.md beside this file).

    python data/pretrained/make_pretrained.py --workdir /tmp/ww-pretrain            # writes data/pretrained/wgan-cpu

1. Training images: the embedded sample's simulator at size "medium" (10 x 1,000 images) with seed 1, i.e. other
   galaxies than the demo's ("small", seed 20211). Cutouts -> Lupton RGB with ``ww_assets.images.cutouts``.
2. WGAN-GP with ``WGANConfig.preset("cpu")`` on all 10,000 images, unsupervised, keeping a snapshot of the
   networks every ``--every`` generator iterations up to ``--max-iterations``.
3. For each snapshot: the izi_f encoder (``encoder_iterations`` of the preset), then single-pass "hsc" scores of
   ``--validation`` training images and the AUROC of the anomaly score for the injected oddities (truth.csv).
   The snapshot with the best validation AUROC is kept (early stopping on the training sample's labels; the
   labels choose *when to stop*, nothing is trained on them).
4. Held out: the same AUROC on the demo's sample (small, seed 20211), which no step above has seen.
5. ``save_wgan`` writes the three safetensors files, card.json (config, data, iteration chosen, the validation
   curve, held-out AUROCs, torch version, device) and figures.

On one CPU thread everything is bit-reproducible for a given PyTorch build and CPU instruction set. It takes
about 20-40 minutes on one core.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def read_sample(sample_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Every batch of a built sample as uint8 Lupton RGB, with its truth rows in the same order."""
    from ww_assets.images.cutouts import read_cutout_folder

    images, ids = [], []
    for batch in sorted(p for p in (sample_dir / "cutouts").iterdir() if p.is_dir()):
        res = read_cutout_folder(batch)
        images.append(res.images)
        ids += list(res.catalog["image_id"].astype(str))
    truth = pd.read_csv(sample_dir / "truth.csv", dtype={"object_id": str}).set_index("object_id").loc[ids]
    return np.concatenate(images), truth


def aurocs(score: np.ndarray, truth: pd.DataFrame) -> dict[str, float]:
    """AUROC for all injected images, astrophysical oddities only, artifacts only (negatives: normal images)."""
    from sklearn.metrics import roc_auc_score

    odd, art = truth["is_odd"].to_numpy(bool), truth["is_artifact"].to_numpy(bool)
    normal = ~(odd | art)
    out = {"all": roc_auc_score(odd | art, score)}
    out["odd"] = roc_auc_score(odd[normal | odd], score[normal | odd])
    out["artifacts"] = roc_auc_score(art[normal | art], score[normal | art])
    return {k: round(float(v), 4) for k, v in out.items()}


def plot_selection(curve: list[dict], chosen: int, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    its = [c["generator_iteration"] for c in curve]
    for key, label in (("anomaly", "anomaly score"), ("image", "image score"), ("feature", "feature score")):
        ax.plot(its, [c[key] for c in curve], marker="o", ms=3, label=label)
    ax.axvline(chosen, color="k", ls="--", lw=1, label=f"kept: iteration {chosen}")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("generator iteration")
    ax.set_ylabel("AUROC, injected oddities vs normal")
    ax.set_title("Validation (training sample, medium seed 1): when to stop", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ww-pretrain"))
    parser.add_argument("--out", default=str(REPO / "data" / "pretrained" / "wgan-cpu"))
    parser.add_argument("--train-size", default="medium")
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument("--demo-size", default="small")
    parser.add_argument("--demo-seed", type=int, default=20211)
    parser.add_argument("--every", type=int, default=25, help="generator iterations between snapshots")
    parser.add_argument("--min-iterations", type=int, default=100)
    parser.add_argument("--max-iterations", type=int, default=400)
    parser.add_argument("--validation", type=int, default=4000, help="training images scored per snapshot")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="WGANConfig overrides, e.g. base_channels=16")
    args = parser.parse_args(argv)

    import torch

    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.plotting.model import image_rows as plot_image_rows
    from ww_assets.plotting.model import loss_curves as plot_loss_curves
    from ww_assets.model.networks import WGANConfig, device_name, parameter_count
    from ww_assets.scores.anomaly import ScoreConfig, reconstruct, score_images
    from ww_assets.simulation.sample import GENERATOR_VERSION, ensure_sample
    from ww_assets.model.training import train_encoder, train_gan

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    started = time.time()
    print(f"building / reading samples under {work}", flush=True)
    ensure_sample(work / "train_sample", size=args.train_size, seed=args.train_seed)
    ensure_sample(work / "demo_sample", size=args.demo_size, seed=args.demo_seed)
    x_train, t_train = read_sample(work / "train_sample")
    x_demo, t_demo = read_sample(work / "demo_sample")
    overlap = set(t_train.index) & set(t_demo.index)
    print(f"training images {len(x_train)}, demo images {len(x_demo)}, shared identifiers {len(overlap)}", flush=True)
    val_idx = np.linspace(0, len(x_train) - 1, min(args.validation, len(x_train))).astype(int)
    x_val, t_val = x_train[val_idx], t_train.iloc[val_idx]

    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    cfg = WGANConfig.preset("cpu", **overrides)
    gan_cfg = cfg.replace(generator_iterations=args.max_iterations)
    wanted = set(range(args.min_iterations, args.max_iterations + 1, args.every))
    snapshots: dict[int, object] = {}

    def keep(step, model):
        if step in wanted:
            snapshots[step] = copy.deepcopy(model).cpu()

    t0 = time.time()
    _, gan_hist, gan_s, gan_rate = train_gan(x_train, gan_cfg, device="cpu", on_iteration=keep,
                                             progress=lambda p: print(p.message(), flush=True), progress_every_s=60)
    print(f"WGAN-GP: {args.max_iterations} iterations in {gan_s:.0f} s", flush=True)
    curve, encoders = [], {}
    for step in sorted(snapshots):
        model = snapshots[step]
        model, enc_hist, enc_s, enc_rate = train_encoder(x_train, model, cfg, device="cpu")
        model.eval()
        res = score_images(model, x_val, ScoreConfig(formula="hsc"))
        row = {"generator_iteration": step,
               "anomaly": aurocs(res.anomaly_score, t_val)["all"],
               "image": aurocs(res.image_score, t_val)["all"],
               "feature": aurocs(res.feature_score, t_val)["all"]}
        curve.append(row)
        encoders[step] = (enc_hist, enc_s, enc_rate)
        print(json.dumps(row), flush=True)
    best = max(curve, key=lambda r: r["anomaly"])
    chosen = best["generator_iteration"]
    model = snapshots[chosen]
    enc_hist, enc_s, enc_rate = encoders[chosen]
    held_out = {}
    for formula in ("hsc", "fanogan"):
        res = score_images(model, x_demo, ScoreConfig(formula=formula))
        held_out[formula] = {"anomaly": aurocs(res.anomaly_score, t_demo), "image": aurocs(res.image_score, t_demo),
                             "feature": aurocs(res.feature_score, t_demo)}
    print(f"kept iteration {chosen}: validation AUROC {best['anomaly']}; held-out (demo sample) "
          f"{json.dumps(held_out['hsc']['anomaly'])}", flush=True)

    final_cfg = cfg.replace(generator_iterations=chosen, name="cpu-pretrained")
    model.config = final_cfg
    for module in model.parts().values():
        module.config = final_cfg
    history = {k: v[:chosen] for k, v in gan_hist.items()}
    history.update(enc_hist)
    card = {
        "source": "pretrained",
        "description": "CPU-sized wGAN (the reference design at an eighth of the width, latent 128) trained on "
                       "simulated HSC-like cutouts that are not the demo's; kept at the generator iteration with "
                       "the best validation AUROC (early stopping). At that stage the generator draws a smooth, "
                       "typical galaxy rather than a likeness of each input: the anomaly score measures how far "
                       "an image is from typical, mostly through the critic's features. Training longer gives "
                       "sharper images but, on these noisy cutouts, a lower AUROC (see selection.png).",
        "training_data": {"simulation": "ww_assets.simulation", "generator_version": GENERATOR_VERSION,
                          "size": args.train_size, "seed": args.train_seed, "n_images": int(len(x_train)),
                          "shared_identifiers_with_demo_sample": len(overlap)},
        "generator_iterations": chosen,
        "encoder_iterations": int(cfg.encoder_iterations),
        "selection": {"metric": "AUROC of the hsc anomaly score (single pass) for injected oddities + artifacts",
                      "validation_images": int(len(x_val)), "curve": curve, "best": best},
        "held_out_demo_sample": {"size": args.demo_size, "seed": args.demo_seed, "n_images": int(len(x_demo)),
                                 "n_injected": int((t_demo["is_odd"] | t_demo["is_artifact"]).sum()),
                                 "auroc": held_out},
        "parameters": int(parameter_count(model)),
        "device": device_name(torch.device("cpu")), "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "torch_version": torch.__version__,
        "seconds": {"wgan_all_snapshots": round(gan_s, 1), "encoder": round(enc_s, 1),
                    "total": round(time.time() - started, 1)},
        "images_per_s": {"wgan": round(gan_rate, 1), "encoder": round(enc_rate, 1)},
        "final_losses": {k: round(float(np.mean(v[-max(1, len(v) // 20):])), 6) for k, v in history.items()},
        "command": "python data/pretrained/make_pretrained.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plot_loss_curves(history, tmp / "loss_curves.png",
                         f"Pretrained CPU wGAN: {len(x_train):,} simulated images (seed {args.train_seed})")
        plot_selection(curve, chosen, tmp / "selection.png")
        picks = np.linspace(0, len(x_demo) - 1, 8).astype(int)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            fake = (model.generator(model.sample_latent(8, generator=gen)).clamp(0, 1) * 255).round()
        plot_image_rows([("real x (demo)", x_demo[picks]), ("G(E(x))", reconstruct(model, x_demo[picks])),
                         ("G(z), z ~ prior", fake.to(torch.uint8).numpy())], tmp / "reconstructions.png",
                        "Held-out demo images, their reconstructions, and random generated images")
        save_wgan(model, args.out, card=card, extra_files={p.name: p for p in tmp.glob("*.png")})
    print(f"wrote {args.out} in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
