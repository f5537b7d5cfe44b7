"""Reproduce the small pretrained CPU model shipped in ww_assets/model/pretrained/wgan-cpu (README.md beside it).

    python -m ww_assets.model.pretrained.make_pretrained --workdir /tmp/ww-pretrain     # writes wgan-cpu/

1. Training images: the embedded sample's simulator at size "medium" (10 x 1,000 images) with seed 1, images only
   (no volunteer side), i.e. other galaxies than the demo's ("small", seed 20211). Cutouts -> Lupton RGB and the
   sky noise of every image (``ww_assets.images``), exactly as the pipeline's ``cutouts`` asset writes them.
2. ``ww_assets.model.training.train`` with ``WGANConfig.preset(--preset)`` on every image but a validation set held
   out of training (``ww_assets.model.build.validation_split``). Unsupervised: no label is read, and nothing is
   chosen by looking at the labels (no early stopping on AUROC).
3. The gates of ``ww_assets.model.quality`` on the held-out images (structure explained, realism), written on the
   card with the training curves, timings and the command; figures as the ``wgan`` asset draws them.

Detection quality (AUROC per class against baselines, novel oddities) is measured separately, on a sample none of
these images are in: ``python benchmarks/detection_quality.py`` (BENCHMARKS.md).

On one CPU thread everything is bit-reproducible for a given PyTorch build and CPU instruction set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def read_sample(sample_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 RGB images, (N, 3) sky noise in channel order i, r, g, image ids) of a built sample."""
    from ww_assets.images.cutouts import read_batch_folders
    from ww_assets.model.data import catalog_noise, fill_missing_noise

    images, catalog, _ = read_batch_folders(sample_dir / "cutouts")
    return images, fill_missing_noise(catalog_noise(catalog), images), list(catalog["image_id"].astype(str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ww-pretrain"))
    parser.add_argument("--out", default=str(HERE / "wgan-cpu"))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--train-size", default="medium")
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="WGANConfig overrides as key=JSON, e.g. seed=3")
    args = parser.parse_args(argv)

    import torch

    from ww_assets.model.build import ModelBuild, assess, model_figures, validation_split
    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.model.networks import WGANConfig, device_name, parameter_count
    from ww_assets.model.training import train
    from ww_assets.simulation.sample import GENERATOR_VERSION, SAMPLE_SIZES, ensure_sample

    torch.set_num_threads(args.threads)
    started = time.time()
    size = int(args.train_size) if args.train_size.isdigit() else args.train_size
    n_planned = size if isinstance(size, int) else SAMPLE_SIZES[size].total_images
    sample_dir = Path(args.workdir) / f"train-{args.train_size}-{args.train_seed}"
    print(f"building / reading the training sample at {sample_dir}", flush=True)
    ensure_sample(sample_dir, size=size, seed=args.train_seed, subject_fraction=16.5 / n_planned, thumbnails=False)
    images, noise, ids = read_sample(sample_dir)
    holdout = validation_split(len(images))
    print(f"{len(images)} images, {len(holdout)} held out of training", flush=True)

    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    cfg = WGANConfig.preset(args.preset, **overrides)
    print(f"config: {json.dumps(cfg.to_dict())}", flush=True)
    result = train(images, cfg, device="cpu", noise=noise, holdout=holdout, progress_every_s=60,
                   progress=lambda p: print(p.message(), flush=True))
    model = result.wgan.eval()
    build = ModelBuild(model, {}, images[holdout], noise[holdout], history=result.history,
                       title=f"Pretrained CPU wGAN ({cfg.name}): {len(images) - len(holdout):,} simulated images")
    gates = assess(build)
    print(f"gates on {len(holdout)} held-out images: {json.dumps(gates)}", flush=True)

    card = {
        "source": "pretrained",
        "description": (
            "CPU-sized wGAN (the reference design at an eighth of the width, latent 128; resize upsampling, flux "
            "output through the Lupton observation model) trained on simulated HSC-like cutouts that are not the "
            "demo's, unsupervised, nothing chosen by labels. Its gates (structure explained, realism) were measured "
            "on held-out images and are on this card: read them before trusting its scores."),
        "training_data": {"simulation": "ww_assets.simulation", "generator_version": GENERATOR_VERSION,
                          "size": args.train_size, "seed": args.train_seed, "n_images": int(len(images)),
                          "held_out": int(len(holdout)), "first_ids": ids[:3]},
        **result.card(),
        "gates": gates,
        "parameters": int(parameter_count(model)),
        "device": device_name(torch.device("cpu")), "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "torch_version": torch.__version__,
        "seconds_total": round(time.time() - started, 1),
        "command": "python -m ww_assets.model.pretrained.make_pretrained " + " ".join(
            argv if argv is not None else sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        figures = model_figures(build, Path(tmp))
        save_wgan(model, args.out, card=card, extra_files={name: path for name, path in figures.items()})
    print(f"wrote {args.out} in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
