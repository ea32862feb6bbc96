"""Dataset converters: every data source into nnU-Net's raw format, checked and lossless.

See ``docs/dataset-conversion.md``. Entry points:
:func:`convert_multisite`, :func:`convert_instance`, :func:`convert_physionet`, :func:`convert_mistie`,
and :func:`install_splits` (copy ``splits_final.json`` into ``nnUNet_preprocessed``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["convert_multisite", "convert_instance", "convert_physionet", "convert_mistie", "install_splits",
           "ConversionError", "ConversionOptions", "Subject", "run_conversion", "read_manifest"]

_WHERE = {
    "convert_multisite": "multisite", "read_manifest": "multisite",
    "convert_instance": "instance", "convert_physionet": "physionet", "convert_mistie": "mistie",
    "install_splits": "splits", "ConversionError": "checks",
    "ConversionOptions": "case", "Subject": "listing", "run_conversion": "core",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package stays cheap (no SimpleITK until needed)
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
