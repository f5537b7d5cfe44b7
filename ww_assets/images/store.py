"""Cutouts by image: the written batches (``images/<batch>/``) read back by (batch, image_id), memory-mapped.

Galleries, the next volunteer round and "more like this" show individual images of many batches; this keeps one
memory map and one id -> row index per batch instead of loading whole batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ww_assets.images.lupton import IMAGE_SIZE
from ww_assets.storage import StorageLayout

__all__ = ["CutoutStore"]


class CutoutStore:
    """Cutouts by (batch, image_id) from ``images/<batch>/cutouts.npy`` + ``catalog.parquet``."""

    def __init__(self, layout: StorageLayout):
        self.layout = layout
        self._batches: dict[str, tuple[np.ndarray, dict[str, int]] | None] = {}

    def _batch(self, batch: str):
        if batch not in self._batches:
            npy, cat = self.layout.cutouts_file(batch), self.layout.catalog_file(batch)
            if npy.exists() and cat.exists():
                catalog = pd.read_parquet(cat, columns=["image_id", "row"])
                rows = dict(zip(catalog["image_id"].astype(str), catalog["row"].astype(int)))
                self._batches[batch] = (np.load(npy, mmap_mode="r"), rows)
            else:
                self._batches[batch] = None
        return self._batches[batch]

    def get(self, batch: str, image_id: str) -> np.ndarray | None:
        """The uint8 (3, H, W) image, or None when its batch or row is not written."""
        b = self._batch(str(batch))
        if b is None or str(image_id) not in b[1]:
            return None
        return np.asarray(b[0][b[1][str(image_id)]])

    def require(self, batch: str, image_id: str) -> np.ndarray:
        img = self.get(batch, image_id)
        if img is None:
            raise FileNotFoundError(f"no cutout for image {image_id} of batch {batch} under "
                                    f"{self.layout.images_dir(str(batch))} (materialise cutouts for that batch)")
        return img

    def stack(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[bool]]:
        """Images of the frame's rows (``batch``, ``image_id``), grey where a cutout is missing, and which were found."""
        imgs, found = [], []
        for b, i in zip(frame["batch"], frame["image_id"]):
            img = self.get(b, i)
            found.append(img is not None)
            imgs.append(img if img is not None else np.full((3, IMAGE_SIZE, IMAGE_SIZE), 128, np.uint8))
        return (np.stack(imgs) if imgs else np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)), found
