"""``nnunet-iph recipe``: one command per reference study, on an already converted dataset.

- :mod:`~nnunet_iph.recipes.table`: the studies as data (intensity, planes / cascade, trainer grid);
- :mod:`~nnunet_iph.recipes.resolve`: a recipe + a dataset -> every name, task and command (pure);
- :mod:`~nnunet_iph.recipes.plans`: the plans in ``nnUNet_preprocessed`` (the ``plan`` command's functions);
- :mod:`~nnunet_iph.recipes.outputs`: ``recipe.json``, ``experiment.toml``, ``commands.sh``, ``README.md``;
- :mod:`~nnunet_iph.recipes.running`: ``--run``, the trainings in order through the SLURM scripts run locally.

What each recipe does and where it differs from its paper: docs/recipes.md.
"""
