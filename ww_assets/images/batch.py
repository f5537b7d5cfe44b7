"""One image batch as read: the uint8 Lupton RGB images, one catalog row per image, and what was quarantined.

``BatchCollector`` gathers images from every file of a batch folder (``ww_assets.images.readers``): it converts
raw fluxes to Lupton RGB, keeps the first of duplicated identifiers, and records every image it refuses with the
reason, so one bad file never stops the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ww_assets.images.lupton import lupton_rgb
from ww_assets.images.sky import SKY_COLUMNS, sky_noise

__all__ = ["ImagingError", "CutoutBatch", "BatchCollector", "CATALOG_COLUMNS", "QUARANTINE_COLUMNS"]

CATALOG_COLUMNS = ["image_id", "batch", "row", "source_path", "ra", "dec", *SKY_COLUMNS]



QUARANTINE_COLUMNS = ["image_id", "source_path", "reason"]



class ImagingError(ValueError):
    """A batch folder (not one image in it) cannot be read: it is missing, empty of images, or inconsistent."""



@dataclass
class CutoutBatch:
    """Images of one batch ready to score, their catalog rows, and what was quarantined (with reasons)."""

    batch: str
    images: np.ndarray                      # uint8 (N, 3, size, size), Lupton RGB, channels first
    catalog: pd.DataFrame                   # CATALOG_COLUMNS; row i describes images[i]
    quarantine: pd.DataFrame                # QUARANTINE_COLUMNS
    ignored_files: list[str] = field(default_factory=list)  # files in the folder that are not cutouts

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def reason_counts(self) -> dict[str, int]:
        """How many images were quarantined per kind of reason (the text before the first ':')."""
        if self.quarantine.empty:
            return {}
        kinds = self.quarantine["reason"].str.split(":", n=1).str[0]
        return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}



class BatchCollector:
    """Gathers images from many sources, keeps the first of duplicated identifiers, records quarantine."""

    def __init__(self, size: int, positions: dict[str, tuple[float, float]]):
        self.size = size
        self.positions = positions
        self.seen: dict[str, str] = {}
        self.rgb_blocks: list[np.ndarray] = []
        self.rows: list[dict] = []
        self.quarantined: list[dict] = []

    def quarantine(self, image_id: str | None, source: Path | str, reason: str) -> None:
        self.quarantined.append({"image_id": image_id, "source_path": str(source), "reason": reason})

    def _claim(self, image_id: str, source: str) -> bool:
        if image_id in self.seen:
            self.quarantine(image_id, source, f"duplicate image_id: also read from {self.seen[image_id]}")
            return False
        self.seen[image_id] = source
        return True

    def _position(self, image_id: str, ra: float | None, dec: float | None) -> tuple[float, float]:
        if image_id in self.positions:
            return self.positions[image_id]
        return (np.nan if ra is None else float(ra), np.nan if dec is None else float(dec))

    def add_rgb(self, ids: list[str], sources: list[str], rgb: np.ndarray,
                radec: list[tuple[float | None, float | None]] | None = None,
                noise: np.ndarray | None = None) -> None:
        """Add uint8 (M, 3, H, W) images; duplicates of earlier identifiers are quarantined, not added."""
        keep = [k for k, (image_id, src) in enumerate(zip(ids, sources)) if self._claim(image_id, src)]
        if not keep:
            return
        self.rgb_blocks.append(rgb[keep] if len(keep) != len(ids) else rgb)
        for k in keep:
            ra, dec = radec[k] if radec is not None else (None, None)
            ra, dec = self._position(ids[k], ra, dec)
            row = {"image_id": ids[k], "source_path": sources[k], "ra": ra, "dec": dec}
            if noise is not None:  # measured on the fluxes; an RGB-only image (a thumbnail) has none
                row.update(zip(SKY_COLUMNS, noise[k].tolist()))
            self.rows.append(row)

    def add_bands(self, ids: list[str], sources: list[str], bands: np.ndarray, band_order: str,
                  radec: list[tuple[float | None, float | None]] | None = None) -> None:
        """Add float (M, 3, H, W) fluxes after checking size and finiteness; converts to Lupton RGB and measures
        each image's sky noise on the fluxes (``ww_assets.images.sky``)."""
        if bands.shape[0] == 0:
            return
        if bands.shape[-2:] != (self.size, self.size):
            for image_id, src in zip(ids, sources):
                self.quarantine(image_id, src, f"wrong size: {bands.shape[-2]}x{bands.shape[-1]} px, "
                                               f"expected {self.size}x{self.size}")
            return
        finite = np.isfinite(bands).all(axis=(2, 3))            # (M, 3)
        good = finite.all(axis=1)
        for k in np.flatnonzero(~good):
            bad = [band_order[c] for c in range(3) if not finite[k, c]]
            count = int((~np.isfinite(bands[k])).sum())
            self.quarantine(ids[k], sources[k], f"non-finite pixels: {count} NaN/inf px in band(s) {','.join(bad)}")
        if not good.any():
            return
        idx = np.flatnonzero(good)
        fluxes = bands[idx] if len(idx) != len(ids) else bands
        rgb = lupton_rgb(fluxes, band_order)
        gri = np.asarray(fluxes)[:, [band_order.index(b) for b in "gri"]]
        self.add_rgb([ids[k] for k in idx], [sources[k] for k in idx], rgb,
                     [radec[k] for k in idx] if radec is not None else None, noise=sky_noise(gri))

    def result(self, batch: str) -> CutoutBatch:
        if self.rgb_blocks:
            images = np.ascontiguousarray(np.concatenate(self.rgb_blocks, axis=0))
        else:
            images = np.zeros((0, 3, self.size, self.size), dtype=np.uint8)
        catalog = pd.DataFrame(self.rows, columns=["image_id", "source_path", "ra", "dec", *SKY_COLUMNS])
        catalog.insert(1, "batch", batch)
        catalog.insert(2, "row", np.arange(len(catalog), dtype=np.int64))
        catalog = catalog[CATALOG_COLUMNS].astype({"image_id": str, "batch": str, "source_path": str,
                                                   "ra": "float64", "dec": "float64",
                                                   **{c: "float64" for c in SKY_COLUMNS}})
        quarantine = pd.DataFrame(self.quarantined, columns=QUARANTINE_COLUMNS)
        quarantine = quarantine.astype({"image_id": "string", "source_path": str, "reason": str})
        return CutoutBatch(batch=batch, images=images, catalog=catalog.reset_index(drop=True),
                           quarantine=quarantine.reset_index(drop=True))

