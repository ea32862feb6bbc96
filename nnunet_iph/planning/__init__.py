"""Experiment plans beyond nnU-Net's defaults: per-plane 2D plans and coarse-to-fine cascades.

- :mod:`~nnunet_iph.planning.orientation`: which array axis is axial/coronal/sagittal (headers);
- :mod:`~nnunet_iph.planning.planes`: one plans file per plane (``nnUNetPlans_axial`` ...);
- :mod:`~nnunet_iph.planning.cascade`: ``next_stage``/``previous_stage`` wiring and checks;
- :mod:`~nnunet_iph.planning.common`: names, folders, preprocessing, splits.

Submodules import nnU-Net lazily; set the nnU-Net environment first
(:func:`nnunet_iph.environment.apply_nnunet_env`).
"""

#: the three slicing planes of the per-plane 2D models, in the order plans, ensembles and reports use
PLANES = ("axial", "coronal", "sagittal")
