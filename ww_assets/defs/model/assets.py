"""The model group: the ``wgan`` asset (generator, critic, encoder), loaded or trained by ``ww_assets.model.build``."""

import os
import tempfile
from pathlib import Path

import dagster as dg

from ww_assets.defs.metadata import png_markdown
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import ModelSourceResource, StorageResource
from ww_assets.model.build import assess, model_figures, obtain_wgan
from ww_assets.model.quality import REALISM_GATE, STRUCTURE_GATE
from ww_assets.model.checkpoints import save_wgan


class WGANAssetConfig(dg.Config):
    """How ``wgan`` gets its networks (run config; the ``model`` resource and its environment variables give the
    defaults).

    checkpoint: "" (the model resource's setting, ``WW_WGAN_CHECKPOINT``, default auto), "auto", "none" (train
        here), or a folder holding a published release's / an earlier run's three weight files (weights only).
    preset: "" (the model resource's, ``WW_WGAN_PRESET``), "auto" (reference on CUDA, cpu otherwise),
        "reference", "cpu", "ci".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    batches: image batches to train on; empty = every batch with written cutouts.
    generator_iterations / encoder_iterations / seed: override the preset's (0 / negative: keep the preset's).
    log_every_s: seconds between progress lines. threads: PyTorch CPU threads (0: PyTorch's default).
    """

    checkpoint: str = ""
    preset: str = ""
    device: str = "auto"
    batches: list[str] = []
    generator_iterations: int = 0
    encoder_iterations: int = 0
    seed: int = -1
    log_every_s: float = 15.0
    threads: int = 0

    def overrides(self) -> dict:
        out = {}
        if self.generator_iterations > 0:
            out["generator_iterations"] = self.generator_iterations
        if self.encoder_iterations > 0:
            out["encoder_iterations"] = self.encoder_iterations
        if self.seed >= 0:
            out["seed"] = self.seed
        return out


@dg.asset(
    name="wgan",
    kinds={"pytorch"},
    pool=GPU_POOL, op_tags=GPU_OP_TAGS,
    deps=["cutouts"],
    description=(
        "The wGAN of the W&W method: generator, critic (discriminator) and encoder, 96 x 96 x 3 images, latent 128. "
        "Trained here (WGAN-GP with the survey's pixel-noise model, then the f-AnoGAN izi_f encoder with G and D "
        "frozen) on the image batches' cutouts, or loaded weights-only from a checkpoint folder (a published "
        "release, an earlier run). Written to models/wgan/: generator/discriminator/encoder .safetensors, card.json "
        "and figures. Without a GPU, on the embedded sample, the shipped pretrained CPU model is loaded; otherwise a "
        "CPU-sized model is trained. Judged on images it was not trained on by two checks."),
    check_specs=[
        dg.AssetCheckSpec("structure_explained", asset="wgan", description=(
            f"On validation images, 1 - (MSE(x, E[x|G(E(x))]) - s2) / (MSE(x, mean image) - s2) >= {STRUCTURE_GATE} "
            "(s2: the images' own pixel-noise variance): G(E(x)) looks like x.")),
        dg.AssetCheckSpec("realism", asset="wgan", description=(
            f"A cross-validated logistic regression on 8x8-binned pixels and colours tells real images from G(z) with "
            f"AUROC <= {REALISM_GATE}: G(z) draws galaxies.")),
    ],
)
def wgan(context: dg.AssetExecutionContext, config: WGANAssetConfig, storage: StorageResource,
         model: ModelSourceResource):
    import torch

    from ww_assets.model.networks import device_name, parameter_count, resolve_device

    layout = storage.layout
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    build = obtain_wgan(layout, config.checkpoint or model.checkpoint_setting(), config.preset or model.preset_setting(),
                        device, config.batches or None, config.overrides(),
                        progress=lambda p: context.log.info(p.message()), progress_every_s=config.log_every_s,
                        log=context.log.info, pretrained_dir=model.pretrained_dir())
    net, card = build.wgan, build.card
    quality = assess(build)
    card["quality"] = quality
    with tempfile.TemporaryDirectory(prefix="wgan-figures-") as tmpdir:
        figures = {**build.shipped_figures, **model_figures(build, Path(tmpdir))}
        save_wgan(net, layout.model_dir, card=card, extra_files=figures)
    context.log.info(f"wrote {layout.model_dir}: {sorted(os.listdir(layout.model_dir))}")
    metadata = {
        "source": card["source"], "why": build.why, "model_dir": dg.MetadataValue.path(str(layout.model_dir)),
        "device": card.get("device", device_name(device)), "parameters": int(parameter_count(net)),
        "base_channels": net.config.base_channels, "latent_dim": net.config.latent_dim,
        "observation_model": net.config.observation, "validation_images": int(len(build.validation)),
    }
    if quality:
        metadata["structure_explained"] = float(quality["structure_explained"]["value"])
        metadata["realism_auroc"] = float(quality["realism"]["auroc"])
    if build.history is not None:
        metadata.update({k: card[k] for k in ("preset", "generator_iterations", "encoder_iterations", "precision",
                                              "seconds_total")})
        metadata["n_training_images"] = int(card["n_training_images"])
        metadata["final_losses"] = dg.MetadataValue.json(card["final_losses"])
    else:
        metadata["checkpoint"] = card["checkpoint"]
        original = card.get("original_card") or {}
        held_out = original.get("held_out_demo_sample")
        if held_out:
            metadata["pretrained_held_out_auroc"] = dg.MetadataValue.json(held_out.get("auroc"))
        gates = original.get("gates") or {}
        if gates:  # the gates the checkpoint's maker measured on its own held-out images
            metadata["checkpoint_card/structure_explained"] = float(gates["structure_explained"]["value"])
            metadata["checkpoint_card/realism_auroc"] = float(gates["realism"]["auroc"])
    for name in figures:
        metadata[name.removesuffix(".png")] = png_markdown(layout.model_dir / name, alt=name)
    return dg.MaterializeResult(metadata=metadata, check_results=_checks(quality))


def _checks(quality: dict) -> list[dg.AssetCheckResult]:
    if not quality:
        note = {"skipped": "no images to judge the model on (a published release loaded without its images)"}
        return [dg.AssetCheckResult(check_name=name, passed=True, metadata=note)
                for name in ("structure_explained", "realism")]
    se, real = quality["structure_explained"], quality["realism"]
    return [
        dg.AssetCheckResult(check_name="structure_explained", passed=se["passed"], metadata={
            "structure_explained": float(se["value"]), "gate": float(se["gate"]),
            "mse_reconstruction": float(se["mse_reconstruction"]), "mse_mean_image": float(se["mse_mean_image"]),
            "noise_variance": float(se["noise_variance"]), "images": int(se["n_images"])}),
        dg.AssetCheckResult(check_name="realism", passed=real["passed"], metadata={
            "auroc": float(real["auroc"]), "gate": float(real["gate"]), "images": int(real["n_images"])}),
    ]
