"""The images stage: cutouts of every image batch as the model sees them, and what could not be used.

Plain Python, no Dagster (``ww_assets.defs.images`` calls these). Import from the modules; this package exports
nothing. Which module answers what:

- ``lupton``: how g, r, i fluxes become the RGB images (``lupton_rgb``; the Lupton parameters, defined once).
- ``cutouts``: the formats a batch folder may hold, ``read_cutout_folder``, and the written batch
  (``images/<batch>/``: ``write_cutout_batch``, ``load_cutouts``, ``load_quarantine``).
- ``readers``: one reader per format (FITS per band or as a cube, npy / HDF5 arrays, PNG / JPG thumbnails, catalogs).
- ``batch``: ``CutoutBatch`` and ``BatchCollector``: which images are quarantined and why.
- ``sky``: each cutout's sky noise, measured on its fluxes (what the model's noise model uses).
- ``sources``: finding batches (folders, published-release runs) and their fingerprints.
- ``store``: single cutouts by (batch, image_id), for galleries and the next round.
"""
