"""The analysis stage: volunteers and machine side by side, and what to show volunteers next.

Plain Python, no Dagster (``ww_assets.defs.analysis`` calls these). Import from the modules; this package exports
nothing. Which module answers what:

- ``human_vs_machine``: the paper's comparison end to end (``compare``).
- ``comparison``: the per-image table, consensus classes, the score-vs-consensus statistics, the interest model.
- ``statistics``: Wilson intervals (astropy), AUROC (scikit-learn), bootstrap intervals (scipy).
- ``tables``: what the analysis reads (normalised scores; the warehouse, read-only).
- ``latents``: the per-batch latent vectors, read back with their ids.
- ``embedding``: the UMAP map of the latent space (umap-learn, or cuML on a GPU).
- ``similarity``: exact nearest neighbours in latent space; ``more_like_this``: one subject's.
- ``next_round``: ranking unseen images for the next volunteer round, and the Zooniverse subject manifest.
"""
