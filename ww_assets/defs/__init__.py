"""The Dagster layer, autoloaded by ``ww_assets.definitions`` (``dg.load_from_defs_folder``).

One folder per pipeline stage, mirroring the plain packages (``ww_assets/zooniverse`` ... ``ww_assets/analysis``);
each folder's ``defs.yaml`` sets the group of every asset in it, once. A module here reads config and resources,
calls one function of the stage package, writes atomically and reports metadata: no science lives here.
Shared pieces: ``resources.py`` (every resource, from the environment), ``pools.py`` (concurrency pools),
``metadata.py`` (turning files and frames into UI metadata), ``images/partitions.py`` (the image batches).
"""
