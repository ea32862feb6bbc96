"""Choices and defaults of the metrics (no heavy imports: the command line reads them for --help)."""

SURFACES = ("surfel", "voxel")
HD95_VARIANTS = ("max_directed", "pooled")
EMPTY_PENALTIES = ("diagonal", "nan")
DEFAULT_SURFACE = "surfel"
DEFAULT_HD95_VARIANT = "max_directed"
DEFAULT_NSD_TOLERANCE_MM = 2.0
DEFAULT_PERCENTILE = 95.0
DEFAULT_EMPTY_PENALTY = "diagonal"
