"""One-command inference (single model, 2.5D ensemble, coarse-to-fine cascade) + hemorrhage volumes.

See :mod:`nnunet_iph.inference.predict` and :mod:`nnunet_iph.inference.volumes`;
``nnunet-iph predict`` is the command line.
"""
