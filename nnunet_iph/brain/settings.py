"""Brain-extraction parameters (no heavy imports: the command line reads the defaults for --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BrainMaskSettings:
    """Parameters in mm / HU / mL; the defaults were chosen on the PhysioNet CT-ICH scans."""

    work_spacing_mm: float = 1.5
    bone_hu: float = 160.0
    soft_min_hu: float = -15.0
    close_mm: float = 3.0
    cut_mm: float = 6.0
    contact_mm: float = 4.0
    min_bone_contact: float = 0.5
    grow_mm: float = 2.0
    min_volume_ml: float = 500.0
    max_volume_ml: float = 3000.0
