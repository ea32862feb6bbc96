"""Cluster runs of the experiment grid as SLURM array jobs (``nnunet-iph slurm plan|submit|status``).

:mod:`~nnunet_iph.cluster.experiment` reads the experiment file and expands the grid,
:mod:`~nnunet_iph.cluster.scripts` renders sbatch scripts (pure text), and
:mod:`~nnunet_iph.cluster.slurm` submits them with the real ``sbatch`` and reports status.
Nothing here imports torch or nnunetv2: planning and status are instant on a login node.
"""

from nnunet_iph.cluster.experiment import Experiment, build_experiment, load_experiment
from nnunet_iph.cluster.scripts import render_script, write_plan

__all__ = ["Experiment", "build_experiment", "load_experiment", "render_script", "write_plan"]
