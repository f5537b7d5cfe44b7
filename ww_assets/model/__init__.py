"""The model stage: the wGAN of the published method (generator, critic, encoder), trained or loaded.

Plain PyTorch, no Dagster and (outside ``quality``'s classifier, ``data`` and ``build``) nothing but torch and numpy,
so the networks, training and the observation model run on a GPU machine with torch alone. Import from the modules;
this package exports nothing. Which module answers what:

- ``networks``: ``WGANConfig`` and its presets, ``Generator``, ``Critic``, ``Encoder``, ``WGAN``; input checks.
- ``observation``: the pixel-noise model of an observed Lupton image (why the generator draws noise-free images,
  and how E[x | G(z)] and Var[x | G(z)] are computed).
- ``training``: WGAN-GP, then the f-AnoGAN izi_f encoder with G and D frozen.
- ``quality``: the gates a trained model must pass (structure explained, realism).
- ``checkpoints``: safetensors save / load, weights only, with a JSON card; the model fingerprint.
- ``data``: the training images (written cutouts) and their noise levels.
- ``selection``: which networks the ``wgan`` asset uses (load which checkpoint, or train which preset), and the
  shipped pretrained model (``pretrained/``, package data).
- ``build``: ``obtain_wgan`` (load or train, with its card) and the figures of a model.
"""
