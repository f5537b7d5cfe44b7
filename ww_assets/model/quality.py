"""Is the model any good? The two gates of a trained wGAN, as plain functions of images.

**Structure explained**, on normal images the model was not trained on::

    1 - (MSE(x, reconstruction) - s2) / (MSE(x, mean image) - s2)

where the reconstruction is the model's expected observation E[x | G(E(x))] and ``s2`` the images' own pixel-noise
variance (``ww_assets.model.observation.noise_variance``: from the image and its measured sky noise, not from the
model). 1 means the model explains all the structure that is not noise; 0 means it does no better than the mean
image. On simulated cutouts with known noise the ``s2`` estimate reads about 2% below the truth, so a perfect
model scores about 0.95 rather than 1 (the gate is a little stricter than the exact one, never laxer).

**Realism**: a simple two-sample classifier (logistic regression on 8 x 8-binned pixels and mean colours,
5-fold cross-validated) told to separate real images from images the model generates (``observe(G(z))``: the
generator's noise-free image through the same observation process). AUROC 0.5: it cannot tell them apart.

Both take arrays (uint8 or float in [0, 1]), so a test can hand them known-good and known-bad inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ww_assets.model.observation import expected_and_variance, noise_variance, observe

__all__ = ["StructureExplained", "structure_explained", "realism_auroc", "model_structure_explained",
           "model_realism", "STRUCTURE_GATE", "REALISM_GATE"]

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
def model_structure_explained(wgan, images_u8, sigma, batch_size: int = 256) -> StructureExplained:
    """``structure_explained`` of a wGAN's single-pass reconstructions of ``images_u8``."""
    dev = wgan.device
    recs = []
    for start in range(0, len(images_u8), batch_size):
        x = _float(images_u8[start:start + batch_size]).to(dev)
        s = torch.as_tensor(np.asarray(sigma[start:start + batch_size]), dtype=torch.float32, device=dev)
        mean, _ = expected_and_variance(wgan.generator(wgan.encoder(x)), s)
        recs.append(mean.cpu())
    return structure_explained(images_u8, torch.cat(recs), sigma)


@torch.inference_mode()
def model_realism(wgan, real_u8, sigma, n: int = 1000, seed: int = 0,
                  noise_corr: float = 0.0) -> tuple[float, np.ndarray]:
    """(realism AUROC, the generated uint8 images) for ``n`` draws of G(z) observed with the real images' noise."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = min(n, len(real_u8))
    real = np.asarray(real_u8[np.sort(rng.choice(len(real_u8), n, replace=False))])
    noise = torch.as_tensor(np.asarray(sigma)[rng.integers(0, len(sigma), n)], dtype=torch.float32)
    z = wgan.sample_latent(n, generator=gen.manual_seed(seed)) if wgan.device.type == "cpu" else \
        wgan.sample_latent(n).to(wgan.device)
    clean = wgan.generator(z).float().cpu()
    fake = (observe(clean, noise, noise_corr, generator=gen).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return realism_auroc(real, fake, seed=seed), fake
