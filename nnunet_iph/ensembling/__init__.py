"""Softmax ensembles of nnU-Net models: 2.5D (axial + coronal + sagittal) and arbitrary model sets.

See :mod:`nnunet_iph.ensembling.ensemble`; ``nnunet-iph ensemble`` is the command line.
"""
