"""The embedded sample's sizes (kept apart from the simulator so that naming a size costs no GalSim import)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SampleSize", "SAMPLE_SIZES"]

@dataclass(frozen=True)
class SampleSize:
    n_batches: int
    batch_size: int
    cutout_format: str = "fits"
    thumbnails: bool = True
    min_per_label: int = 0  # force at least this many of every label (tiny: so tests see every kind)
    subject_fraction: float = 0.70
    exposures_min: int = 15
    exposures_max: int = 25
    n_images: int = 0  # 0: n_batches x batch_size; else the exact count (the last batch may be short)

    @property
    def total_images(self) -> int:
        return self.n_images or self.n_batches * self.batch_size



SAMPLE_SIZES: dict[str, SampleSize] = {
    "tiny": SampleSize(n_batches=2, batch_size=48, min_per_label=2),
    "small": SampleSize(n_batches=4, batch_size=256),
    "medium": SampleSize(n_batches=10, batch_size=1000, cutout_format="npy"),
    "large": SampleSize(n_batches=100, batch_size=1000, cutout_format="npy", thumbnails=False),
}

