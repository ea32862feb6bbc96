"""Intracranial (brain plus extra-axial spaces) masks of head CT, offline: numpy / scipy / SimpleITK.

``extraction`` holds the algorithm, ``folder`` the command's runner, ``settings`` the parameters.
"""
