"""DICOM-SEG output (highdicom): the predicted label map as a Segmentation of the source series.

The SEG references every source slice (by SOPInstanceUID) and takes its frame geometry from
them, so a viewer or PACS overlays it on exactly the voxels of the NIfTI mask. Label ``v > 0``
of ``dataset.json`` becomes segment ``v`` (BINARY segmentation, one segment per label).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from nnunet_iph.imageio import atomic_path


def _segment_descriptions(labels: Mapping[str, int]):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from nnunet_iph import __version__

    algorithm = hd.AlgorithmIdentificationSequence(name="nnunet-iph", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    return [hd.seg.SegmentDescription(segment_number=value, segment_label=name,
                                      segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                      segmented_property_type=codes.SCT.Hemorrhage,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for name, value in sorted(labels.items(), key=lambda kv: kv[1])]


def foreground_labels(labels: Mapping[str, object] | None) -> dict[str, int]:
    """``{name: value}`` of the integer labels > 0 (region labels have no single value: refused)."""
    out = {}
    for name, value in (labels or {"hemorrhage": 1}).items():
        if not isinstance(value, int):
            raise ValueError(f"label {name!r} is a region ({value}); DICOM-SEG output needs integer labels")
        if value > 0:
            out[name] = value
    return out


def write_dicom_seg(label_map: np.ndarray, source_files: list[str], path: str | os.PathLike,
                    labels: Mapping[str, int], series_description: str = "nnunet-iph segmentation") -> Path:
    """``label_map`` (slices, rows, cols) in the order of ``source_files`` -> one DICOM-SEG file."""
    import highdicom as hd
    import pydicom

    from nnunet_iph import __version__

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files]
    if label_map.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"label map {label_map.shape} does not match the {len(sources)} source slices of "
                         f"{sources[0].Rows}x{sources[0].Columns}")
    fg = foreground_labels(labels)
    found = set(np.unique(label_map).tolist()) - {0}
    if found - set(fg.values()):
        raise ValueError(f"label map holds values {sorted(found - set(fg.values()))} not in the labels {fg}")
    # highdicom needs consecutive segment numbers 1..n: relabel when dataset.json skips values
    numbers = {v: i + 1 for i, v in enumerate(sorted(fg.values()))}
    lut = np.zeros(max(fg.values()) + 1, np.uint8)
    for v, n in numbers.items():
        lut[v] = n
    series_number = int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=lut[label_map.astype(np.int64)],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions({k: numbers[v] for k, v in fg.items()}),
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="nnunet-iph", manufacturer_model_name="nnunet-iph predict", software_versions=__version__,
        device_serial_number="0", series_description=series_description, omit_empty_frames=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def read_dicom_seg(path: str | os.PathLike, source_files: list[str]) -> np.ndarray:
    """A SEG back as a label map (slices, rows, cols) in the order of ``source_files`` (segment numbers)."""
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(path))
    uids = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
            for f in source_files]
    return np.asarray(seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                        skip_overlap_checks=False))
