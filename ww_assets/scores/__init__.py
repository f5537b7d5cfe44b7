"""The scores stage: per image, how anomalous the machine finds it, and its latent vector.

Plain Python/PyTorch, no Dagster (``ww_assets.defs.scores`` calls these). Import from the modules; this package
exports nothing. Which module answers what:

- ``anomaly``: where the anomaly score is computed (``score_images``; the formulas, ``ScoreConfig``).
- ``residuals``: the residual in units of the image's own noise, the matched filter, the local statistics.
- ``batches``: scoring a whole written batch (chunks streamed to the device), or loading a published release run.
- ``release``: the published W&W release formats (score CSV + latent npy), in and out; which file holds the scores
  of a batch (``scores/<batch>/``).
- ``normalise``: sigma scores and ranks over every batch, per score family.
- ``evaluation``: the truth table (the sample's injected labels) and detection metrics against it.
"""
