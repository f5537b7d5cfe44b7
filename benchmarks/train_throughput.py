"""Training and scoring throughput of the wGAN on this machine, printed with the machine it ran on.

    python benchmarks/train_throughput.py                       # preset "cpu" on CPU, all cores
    python benchmarks/train_throughput.py --threads 1           # one core
    python benchmarks/train_throughput.py --preset reference --device cuda --iterations 50
    python benchmarks/train_throughput.py --preset reference --device cuda --precision fp32 --channels-last off

What is timed, after ``--warmup`` untimed iterations, on random uint8 images (speed does not depend on content):

* WGAN-GP: ``--iterations`` generator iterations (each ``critic_steps`` critic steps with the gradient penalty, then
  one generator step). Reported as real images through the critic per second and generator iterations per second.
* encoder (izi_f): ``--iterations`` encoder steps; images per second.
* scoring: one pass of E, G and the critic's features on real and reconstructed images (``ww_assets.scores.anomaly``,
  single pass), batch ``--score-batch``; images per second.

The demo's training time follows from these: preset "cpu" runs generator_iterations / (iterations/s) plus
encoder_iterations / (encoder steps/s). Plain PyTorch; no Dagster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ww_assets.machine import machine_info, torch_info  # noqa: E402


def machine() -> dict:
    return {**machine_info(), **torch_info()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="reference, cpu or ci (default cpu)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=10, help="timed generator / encoder iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: PyTorch's default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--compile", action="store_true", help="torch.compile where safe (CUDA only)")
    parser.add_argument("--score-batch", type=int, default=256)
    parser.add_argument("--score-images", type=int, default=2048)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from ww_assets.model.networks import WGAN, WGANConfig, device_name, parameter_count, resolve_device
    from ww_assets.scores.anomaly import ScoreConfig, score_images
    from ww_assets.model.training import train_encoder, train_gan

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = WGANConfig.preset(args.preset, precision=args.precision, channels_last=args.channels_last,
                             compile=args.compile)
    rng = np.random.default_rng(0)
    n_data = max(512, base.batch_size * base.critic_steps * 4)
    data = rng.integers(0, 256, (n_data, 3, base.image_size, base.image_size), dtype=np.uint8)
    torch.manual_seed(base.seed)
    model = WGAN(base)
    print(f"machine: {json.dumps(machine())}")
    print(f"device: {device_name(device)}; preset '{args.preset}': base_channels {base.base_channels}, "
          f"{parameter_count(model):,} parameters, batch {base.batch_size}, {base.critic_steps} critic steps")

    def timed(cfg, phase):
        nonlocal model
        if phase == "wgan":
            model, _, seconds, rate = train_gan(data, cfg, device, model=model)
        else:
            model, _, seconds, rate = train_encoder(data, model, cfg, device)
        return seconds, rate

    results = {"machine": machine(), "device": device_name(device), "preset": args.preset,
               "config": base.to_dict()}
    for phase, key in (("wgan", "generator_iterations"), ("encoder", "encoder_iterations")):
        if args.warmup:
            timed(base.replace(**{key: args.warmup}), phase)
        cpu0 = time.process_time()
        seconds, rate = timed(base.replace(**{key: args.iterations}), phase)
        cpu = time.process_time() - cpu0
        per_iter = seconds / args.iterations
        results[phase] = {"iterations": args.iterations, "seconds": seconds, "images_per_s": rate,
                          "seconds_per_iteration": per_iter, "process_cpu_seconds": cpu}
        unit = "real images/s through the critic" if phase == "wgan" else "images/s"
        print(f"{phase:8s}: {rate:10,.1f} {unit}; {per_iter:.3f} s per iteration "
              f"({args.iterations} iterations, {seconds:.1f} s wall, {cpu:.1f} s CPU)")
    est = (base.generator_iterations * results["wgan"]["seconds_per_iteration"]
           + base.encoder_iterations * results["encoder"]["seconds_per_iteration"])
    results["estimated_full_training_seconds"] = est
    print(f"estimated full '{args.preset}' training ({base.generator_iterations} generator + "
          f"{base.encoder_iterations} encoder iterations): {est:,.0f} s")

    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    cl = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
    score_cfg = ScoreConfig(batch_size=args.score_batch, precision="bf16" if bf16 else "fp32", channels_last=cl,
                            compile=args.compile)
    images = torch.from_numpy(rng.integers(0, 256, (args.score_images, 3, base.image_size, base.image_size),
                                           dtype=np.uint8))
    score_images(model, images[: args.score_batch], score_cfg, device)  # warm-up (and compile)
    res = score_images(model, images, score_cfg, device)
    results["scoring"] = {"images": len(images), "seconds": res.seconds, "images_per_s": res.images_per_s,
                          "config": score_cfg.to_dict()}
    print(f"scoring : {res.images_per_s:10,.1f} images/s ({len(images)} images, batch {args.score_batch}, "
          f"{score_cfg.precision}{', channels-last' if cl else ''}{', compiled' if args.compile else ''})")
    results["machine_after"] = machine()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
