"""Is the model any good? The two gates of a trained wGAN, as plain functions of images.

**Structure explained**, on normal images the model was not trained on::

    1 - (MSE(x, reconstruction) - s2) / (MSE(x, mean image) - s2)

where the reconstruction is the model's expected observation E[x | G(E(x))] and ``s2`` the images' own pixel-noise
variance (``ww_assets.model.observation.noise_variance``: from the image and its measured sky noise, not from the
model). 1 means the model explains all the structure that is not noise; 0 means it does no better than the mean
image. On simulated cutouts with known noise the ``s2`` estimate reads about 2% below the truth, so a perfect
model scores about 0.95 rather than 1 (the gate is a little stricter than the exact one, never laxer).

**Realism**: a simple two-sample classifier (logistic regression on 8 x 8-binned pixels and mean colours,
5-fold cross-validated) told to separate real images from images the model generates (``observe_flux`` of G(z): the
generator's noise-free image through the same observation process). AUROC 0.5: it cannot tell them apart.

Both take arrays (uint8 or float in [0, 1]), so a test can hand them known-good and known-bad inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ww_assets.model.observation import noise_variance

__all__ = ["StructureExplained", "structure_explained", "realism_auroc", "reconstructions",
           "model_structure_explained", "generated", "model_realism", "STRUCTURE_GATE", "REALISM_GATE"]

#: the gates the shipped model must pass (issue 14)
STRUCTURE_GATE = 0.8
REALISM_GATE = 0.75


def _float(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


@dataclass
class StructureExplained:
    value: float
    mse_reconstruction: float
    mse_mean_image: float
    noise_variance: float
    n_images: int

    def as_dict(self) -> dict:
        return asdict(self)


def structure_explained(x, reconstruction, sigma) -> StructureExplained:
    """The gate's figure for observed images ``x``, their reconstructions (expected observations, same shape) and
    their sky noise ``sigma`` (N, 3) in flux units, channel order i, r, g."""
    x, rec = _float(x), _float(reconstruction)
    s = torch.as_tensor(np.asarray(sigma), dtype=torch.float32)
    s2 = float(noise_variance(x, s).mean())
    mse_rec = float((x - rec).pow(2).mean())
    mse_mean = float((x - x.mean(0, keepdim=True)).pow(2).mean())
    value = 1.0 - (mse_rec - s2) / (mse_mean - s2) if mse_mean > s2 else float("nan")
    return StructureExplained(value, mse_rec, mse_mean, s2, int(x.shape[0]))


def _features(images: torch.Tensor, factor: int = 8) -> np.ndarray:
    binned = torch.nn.functional.avg_pool2d(images, factor).flatten(1)
    return torch.cat([binned, images.mean((2, 3))], 1).numpy()


def realism_auroc(real, generated, seed: int = 0) -> float:
    """Cross-validated AUROC of a logistic regression telling ``real`` from ``generated`` images (0.5 = cannot)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _features(_float(real)), _features(_float(generated))
    X = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, X, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


@torch.inference_mode()
def reconstructions(wgan, images_u8, noise, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected observations float (N, 3, H, W), noise-free RGB reconstructions uint8, residual maps in noise units
    summed over channels (N, H, W)) of a wGAN's single encoder pass."""
    from ww_assets.scores.residuals import noise_units

    dev = wgan.device
    means, rgbs, maps = [], [], []
    for start in range(0, len(images_u8), batch_size):
        x = _float(images_u8[start:start + batch_size]).to(dev)
        s = torch.as_tensor(np.asarray(noise[start:start + batch_size]), dtype=torch.float32, device=dev)
        g = wgan.generator(wgan.encoder(x))
        mean, var = wgan.expected(g, s, exact=True)
        var = noise_variance(x, s) if var is None else var
        u = noise_units(x, mean, var)
        means.append(mean.cpu())
        rgbs.append((wgan.rgb(g).clamp(0, 1) * 255).round().to(torch.uint8).cpu())
        maps.append((u.sum(1) / np.sqrt(3)).cpu())
    return torch.cat(means).numpy(), torch.cat(rgbs).numpy(), torch.cat(maps).numpy()


def model_structure_explained(wgan, images_u8, noise, batch_size: int = 256) -> StructureExplained:
    """``structure_explained`` of a wGAN's single-pass reconstructions of ``images_u8``."""
    mean, _, _ = reconstructions(wgan, images_u8, noise, batch_size)
    return structure_explained(images_u8, mean, noise)


@torch.inference_mode()
def generated(wgan, n: int, noise, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(``n`` generated images as the critic sees them, uint8; their noise-free RGB, uint8) for z ~ the prior, each
    observed with the sky noise of a random row of ``noise`` (ignored without an observation model)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=wgan.device).manual_seed(seed)
    z = wgan.sample_latent(n, generator=gen)
    g = wgan.generator(z).float()
    s = torch.as_tensor(np.asarray(noise)[rng.integers(0, len(noise), n)], dtype=torch.float32, device=wgan.device)
    seen = wgan.observed(g, s, generator=gen)
    as_u8 = lambda t: (t.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # noqa: E731
    return as_u8(seen), as_u8(wgan.rgb(g))


def model_realism(wgan, real_u8, noise, n: int = 1000, seed: int = 0) -> float:
    """Realism AUROC of ``n`` generated images against as many real ones."""
    rng = np.random.default_rng(seed)
    n = min(n, len(real_u8))
    real = np.asarray(real_u8)[np.sort(rng.choice(len(real_u8), n, replace=False))]
    fake, _ = generated(wgan, n, noise, seed)
    return realism_auroc(real, fake, seed=seed)
