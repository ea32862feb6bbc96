"""Post-processing of predicted masks and its choice on cross-validation results."""

from nnunet_iph.postprocessing.operations import (FILL_MODES, RADIUS_UNITS, PostprocessingConfig,
                                                  apply_postprocessing, closing, fill_holes,
                                                  keep_largest_components, opening, process_mask,
                                                  remove_small_components, restrict_to_brain,
                                                  structuring_element)

__all__ = ["FILL_MODES", "RADIUS_UNITS", "PostprocessingConfig", "apply_postprocessing", "closing", "fill_holes",
           "keep_largest_components", "opening", "process_mask", "remove_small_components", "restrict_to_brain",
           "structuring_element"]
