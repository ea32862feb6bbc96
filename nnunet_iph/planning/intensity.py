"""Intensity protocols: the HU windows of the reference studies, applied by nnU-Net's own CTNormalization.

Why this way: nnU-Net 2.8 resolves normalisation classes only inside ``nnunetv2`` (a class of ours
would make plain ``nnUNetv2_predict`` fail), but its ``CTNormalization`` is exactly a window when
the plans say so: it clips each channel to ``[percentile_00_5, percentile_99_5]`` and then computes
``(x - mean) / std``. With ``percentile_00_5 = mean = lower`` and ``percentile_99_5 = lower + std =
upper`` a channel becomes ``(clip(x, lower, upper) - lower) / (upper - lower)``: the window mapped
to [0, 1]. The plans carry it, so training (``nnUNetv2_preprocess``), ``nnunet-iph predict`` and plain
``nnUNetv2_predict`` run the same arithmetic on the same HU, before resampling, as nnU-Net always
does. A fixed window replaces the studies' per-image min-max after clipping: identical whenever a
scan reaches both window bounds (air and bone do in every head CT), and never scan-dependent.

A multi-window protocol needs one CT channel per window (the dataset converted with
``--ct-channels N``: the same CT as channels ``_0000`` .. ``_000N-1``, see the converters).
"""

from __future__ import annotations

import json
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

INTENSITY_KEY = "nnunet_iph_intensity"  # plans-level record of the protocol
DEFAULT_PROTOCOL = "nnunet"


@dataclass(frozen=True)
class Window:
    name: str
    lower: float
    upper: float

    def properties(self) -> dict[str, float]:
        """``foreground_intensity_properties_per_channel`` entry making CTNormalization this window."""
        return {"mean": float(self.lower), "std": float(self.upper - self.lower), "median": float(self.lower),
                "min": float(self.lower), "max": float(self.upper),
                "percentile_00_5": float(self.lower), "percentile_99_5": float(self.upper)}


@dataclass(frozen=True)
class IntensityProtocol:
    name: str
    description: str
    windows: tuple[Window, ...] = ()  # empty: nnU-Net's own CT normalisation from the dataset fingerprint

    @property
    def num_channels(self) -> int:
        return max(1, len(self.windows))


PROTOCOLS: dict[str, IntensityProtocol] = {p.name: p for p in (
    IntensityProtocol("nnunet", "nnU-Net's CT normalisation: clip to the 0.5/99.5 percentiles of the "
                                "foreground HU, z-score with the foreground mean / SD"),
    IntensityProtocol("midl2026", "MIDL 2026 benchmark: HU clipped to [-30, 100], mapped to [0, 1]",
                      (Window("midl", -30, 100),)),
    IntensityProtocol("blastct", "BLAST-CT: HU window [-15, 100], mapped to [0, 1]",
                      (Window("blastct", -15, 100),)),
    IntensityProtocol("multiwindow", "three windows as channels: brain [0, 80], subdural [-20, 180], "
                                     "bone [-800, 2000] HU, each mapped to [0, 1]",
                      (Window("brain", 0, 80), Window("subdural", -20, 180), Window("bone", -800, 2000))),
)}


def get_protocol(name: str) -> IntensityProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown intensity protocol {name!r} (choose from {sorted(PROTOCOLS)})")
    return PROTOCOLS[name]


def variant_plans_name(plans_name: str, protocol: str, plane: str | None = None) -> str:
    """``nnUNetPlans_axial`` -> ``nnUNetPlans_midl2026_axial`` (the plane stays last), else ``<name>_<protocol>``."""
    if plane and plans_name.endswith(f"_{plane}"):
        return f"{plans_name[: -len(plane) - 1]}_{protocol}_{plane}"
    return f"{plans_name}_{protocol}"


def check_channels(protocol: str, channel_names: dict[str, str]) -> None:
    """Refuse a dataset the protocol cannot window: a non-CT channel (a window of HU means nothing for
    another modality) or a channel count other than the protocol's number of windows."""
    proto = get_protocol(protocol)
    if not proto.windows:
        return  # nnU-Net's own normalisation takes any channels
    not_ct = {c: v for c, v in channel_names.items() if str(v).upper() != "CT"}
    if not_ct:
        raise ValueError(f"intensity protocol {protocol!r} windows CT channels, but channel_names has {not_ct}")
    if len(channel_names) != proto.num_channels:
        raise ValueError(f"intensity protocol {protocol!r} needs {proto.num_channels} CT channel(s) (one per "
                         f"window), the dataset has {len(channel_names)}; convert the dataset with "
                         f"--ct-channels {proto.num_channels}")


def check_dataset_channels(dataset: int | str, protocol: str) -> dict[str, str]:
    """:func:`check_channels` on the dataset's raw dataset.json (named in the error); its channel_names."""
    from nnunet_iph.planning.common import raw_dir

    dataset_json = raw_dir(dataset) / "dataset.json"
    channel_names = json.loads(dataset_json.read_text(encoding="utf-8"))["channel_names"]
    try:
        check_channels(protocol, channel_names)
    except ValueError as err:
        raise ValueError(f"{dataset_json}: {err}") from None
    return channel_names


def with_intensity_protocol(plans: dict, protocol: str, channel_names: dict[str, str],
                            plans_name: str | None = None) -> dict:
    """A copy of ``plans`` whose every configuration normalises by ``protocol``, under a new plans and
    data identifier (the preprocessed arrays differ, so they must not share a folder).

    ``channel_names`` is the dataset.json entry (see :func:`check_channels`).
    """
    proto = get_protocol(protocol)
    if not proto.windows:
        raise ValueError(f"intensity protocol {protocol!r} is nnU-Net's own normalisation: use the plans as they are")
    if plans.get(INTENSITY_KEY):
        raise ValueError(f"plans {plans.get('plans_name')!r} already use intensity protocol "
                         f"{plans[INTENSITY_KEY].get('protocol')!r}: derive from the original plans")
    check_channels(protocol, channel_names)
    from nnunet_iph.planning.planes import plans_plane  # planes may one day import this module

    channels = sorted(channel_names, key=int)
    new = deepcopy(plans)
    new["plans_name"] = plans_name or variant_plans_name(plans["plans_name"], protocol, plans_plane(plans))
    for cfg_name, cfg in new["configurations"].items():
        if "data_identifier" in cfg:  # configurations without one inherit their parent's (renamed here too)
            cfg["data_identifier"] = f"{new['plans_name']}_{cfg_name}"
        if "normalization_schemes" in cfg:
            cfg["normalization_schemes"] = ["CTNormalization"] * len(channels)
            cfg["use_mask_for_norm"] = [False] * len(channels)
    new["foreground_intensity_properties_per_channel"] = {c: w.properties() for c, w in zip(channels, proto.windows)}
    new[INTENSITY_KEY] = {"protocol": proto.name, "description": proto.description,
                          "windows": [[w.name, w.lower, w.upper] for w in proto.windows],
                          "derived_from": plans["plans_name"]}
    return new


def write_intensity_plans(dataset: int | str, source_plans_identifier: str, protocol: str,
                          overwrite: bool = False) -> Path:
    """Write the ``protocol`` variant of existing plans next to them; return its path.

    Idempotent when the variant file already holds the same plans. A variant with other content
    (the source plans were re-planned, or edited) is refused unless ``overwrite``: models trained on
    it, and its preprocessed data, would no longer match.
    """
    from nnunet_iph.planning.common import dataset_name, load_plans, plans_path, save_plans

    name = dataset_name(dataset)
    source = plans_path(name, source_plans_identifier)
    plans = load_plans(name, source_plans_identifier)
    channel_names = check_dataset_channels(name, protocol)
    try:
        new = with_intensity_protocol(plans, protocol, channel_names)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    target = plans_path(name, new["plans_name"])
    if target.is_file():
        from nnunetv2.utilities.json_export import recursive_fix_for_json_export

        recursive_fix_for_json_export(new)
        if json.loads(target.read_text(encoding="utf-8")) == json.loads(json.dumps(new)):
            return target
        if not overwrite:
            raise ValueError(f"{target}: exists with content other than the {protocol!r} variant of {source.name} "
                             "(re-planned or edited source plans?); overwrite it (--overwrite-intensity-plans) "
                             "only if no model was trained on it")
    return save_plans(new, target)


def plans_protocol(plans: dict) -> str:
    """The intensity protocol a plans dict was made with (``nnunet`` for nnU-Net's own)."""
    meta = plans.get(INTENSITY_KEY)
    return meta.get("protocol", DEFAULT_PROTOCOL) if isinstance(meta, dict) else DEFAULT_PROTOCOL
