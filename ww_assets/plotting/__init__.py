"""Plotting stage: every figure of the analysis as a plain function, frames/arrays in, one PNG written out.

Modules (import the one you need; this package imports none of them):

* ``style``: figure and save helpers (Agg canvas, atomic PNG), marker sizes, colour limits, shared colours.
* ``maps``: the latent map coloured by a value (``umap_continuous``) or a category (``umap_categorical``), and
  predicted interest with its boundary (``interest_map``).
* ``distributions``: score histograms by class (``score_distributions``), fraction vs score with binned means
  (``fraction_vs_score``, ``binned_means``), ROC curves (``roc_curves``), per-class means (``class_summary``).
* ``galleries``: grids of cutouts (``gallery``).
* ``consensus``: the volunteer-consensus histogram; ``scores``: a batch's score histogram and the detection-quality
  chart; ``model``: a wGAN's loss curves and rows of real / reconstructed / residual / generated images.
* ``report``: every figure of the analysis drawn from the files the analysis wrote (``make_plots``).

The consensus classes the figures colour by are defined in ``ww_assets.analysis.comparison``.
"""
