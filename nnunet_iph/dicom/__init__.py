"""DICOM input and output: series discovery and selection, one series reader, DICOM-SEG writing.

Headers are read with pydicom (fast, no pixel decoding, every tag available for the selection
rule); pixels with SimpleITK/GDCM (decodes the common transfer syntaxes, JPEG / JPEG 2000 / RLE
included, and applies RescaleSlope/Intercept). See ``docs/dicom.md``.
"""

from nnunet_iph.imageio import InputError


class DicomError(InputError):
    """A defect in a DICOM input; the message names the folder or file and the problem."""
