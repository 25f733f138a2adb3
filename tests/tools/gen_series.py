#!/usr/bin/python3
"""Synthetic DICOM series for ainode tests and benchmarks.

Writes valid Part-10 files (explicit VR little endian) that look like an axial
CT acquisition: a body-shaped phantom with lungs, a spine and noise, fully
determined by ``seed``. UIDs are new on every call (pydicom.uid.generate_uid).

Pixel encoding (the same for every file this module writes):
    BitsAllocated 16, BitsStored 16, HighBit 15, PixelRepresentation 0
    stored value = HU + 1024 (uint16), RescaleSlope 1, RescaleIntercept -1024
HU values below -1024 are clipped to -1024.

As a module:
    from gen_series import make_ct_series, make_study
    files = make_ct_series("/tmp/s", 40, rows=256, cols=256)
    study = make_study("/tmp/st", [{"slices": 20}, {"slices": 10, "modality": "MR"}])

As a command:
    gen_series.py --out DIR --slices N [--rows R --cols C --series K --seed S]
writes a study of K series (DIR/s01_CT, DIR/s02_CT, ...) and prints a JSON
summary (study_uid, series_uid, file counts) on stdout.
"""

import argparse
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

# SOP class used for a modality when the caller does not name one.
SOP_CLASS_FOR_MODALITY = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "PT": PET_IMAGE_STORAGE,
}

HU_OFFSET = 1024  # stored = HU + 1024, RescaleIntercept = -1024
MANUFACTURER = "AINODE-TEST"

__all__ = [
    "make_ct_series",
    "make_study",
    "phantom_slice",
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "PET_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_STORAGE",
    "HU_OFFSET",
]


class _Phantom:
    """Pre-computed geometry so that each slice costs a few numpy operations."""

    def __init__(self, rows, cols, seed):
        self.rows, self.cols, self.seed = rows, cols, seed
        y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2.0) / (rows / 2.0)
        x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2.0) / (cols / 2.0)
        self.y = y[:, None]
        self.x = x[None, :]
        # A seed-dependent but fixed-per-series texture, so that series made
        # with different seeds differ everywhere, not only in the noise.
        rng = np.random.default_rng([seed, 0x5EED])
        self.shift = rng.uniform(-0.05, 0.05, size=2).astype(np.float32)

    def slice_hu(self, z_index):
        y = self.y - self.shift[0]
        x = self.x - self.shift[1]
        # Body outline changes smoothly along z.
        k = 1.0 + 0.08 * np.sin(z_index / 23.0)
        body = (x / (0.85 * k)) ** 2 + (y / (0.62 * k)) ** 2 <= 1.0
        lung_r = (((x - 0.38) / 0.28) ** 2 + ((y + 0.05) / 0.42) ** 2) <= 1.0
        lung_l = (((x + 0.38) / 0.28) ** 2 + ((y + 0.05) / 0.42) ** 2) <= 1.0
        spine = ((x / 0.09) ** 2 + ((y - 0.45) / 0.09) ** 2) <= 1.0
        hu = np.full((self.rows, self.cols), -1000, dtype=np.int16)
        hu[body] = 40
        hu[(lung_r | lung_l) & body] = -850
        hu[spine] = 700
        rng = np.random.default_rng([self.seed, z_index])
        noise = rng.integers(-20, 21, size=(self.rows, self.cols), dtype=np.int16)
        hu += noise
        return hu


def phantom_slice(z_index, rows=512, cols=512, seed=0):
    """HU values (int16 array rows x cols) of slice z_index of the default phantom."""
    return _Phantom(rows, cols, seed).slice_hu(z_index)


def _hu_to_stored(hu):
    hu = np.asarray(hu)
    stored = np.clip(hu.astype(np.int32) + HU_OFFSET, 0, 65535).astype("<u2")
    return stored


def _ds_float(value):
    """A value formatted for a DS element (at most 16 characters)."""
    s = repr(float(value))
    if s.endswith(".0"):
        s = s[:-2]
    if len(s) > 16:
        s = ("%.10g" % float(value))[:16]
    return s


def make_ct_series(out_dir, slices, rows=512, cols=512, study_uid=None,
                   series_uid=None, series_number=1, modality="CT",
                   series_description="Synthetic axial series",
                   body_part="CHEST", patient_id="TEST0001",
                   patient_name="Test^Phantom", start_z=0.0, spacing=1.0,
                   pixel_spacing=(0.7, 0.7), seed=0, pixel_fn=None,
                   study_description="AINODE synthetic study",
                   study_date="20240101", study_time="120000",
                   accession_number="ACC0001", study_id="1",
                   frame_of_reference_uid=None, sop_class_uid=None,
                   protocol_name=None, file_prefix="IM"):
    """Writes one series of `slices` single-frame images into out_dir.

    Returns the list of file paths in slice order (InstanceNumber 1..N,
    ImagePositionPatient (0, 0, start_z + i*spacing)).

    pixel_fn(z_index, rows, cols) -> int16 array of HU values replaces the
    built-in phantom. The SOP class follows the modality (CT, MR, PT; anything
    else is Secondary Capture) unless sop_class_uid is given.
    """
    if slices < 1:
        raise ValueError("slices must be >= 1")
    os.makedirs(out_dir, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    sop_class_uid = sop_class_uid or SOP_CLASS_FOR_MODALITY.get(
        modality, SECONDARY_CAPTURE_STORAGE)
    protocol_name = protocol_name or series_description
    phantom = None if pixel_fn is not None else _Phantom(rows, cols, seed)
    slice_thickness = _ds_float(abs(spacing) if spacing else 1.0)
    px_spacing = [_ds_float(pixel_spacing[0]), _ds_float(pixel_spacing[1])]
    series_time = study_time

    paths = []
    for i in range(slices):
        if pixel_fn is not None:
            hu = np.asarray(pixel_fn(i, rows, cols))
            if hu.shape != (rows, cols):
                raise ValueError("pixel_fn returned shape %r, expected %r"
                                 % (hu.shape, (rows, cols)))
        else:
            hu = phantom.slice_hu(i)
        stored = _hu_to_stored(hu)

        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class_uid
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "AINODE_TEST_1"

        path = os.path.join(out_dir, "%s%05d.dcm" % (file_prefix, i + 1))
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian = True
        ds.is_implicit_VR = False

        z = start_z + i * spacing
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.AcquisitionDate = study_date
        ds.ContentDate = study_date
        ds.StudyTime = study_time
        ds.SeriesTime = series_time
        ds.AcquisitionTime = study_time
        ds.ContentTime = study_time
        ds.AccessionNumber = accession_number
        ds.Modality = modality
        ds.Manufacturer = MANUFACTURER
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "Synthetic"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = slice_thickness
        if modality == "CT":
            ds.KVP = "120"
        ds.ProtocolName = protocol_name
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = study_id
        ds.SeriesNumber = str(series_number)
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(i + 1)
        ds.ImagePositionPatient = ["0", "0", _ds_float(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_float(z)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = px_spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = str(-HU_OFFSET)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"

        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


_STUDY_LEVEL_KEYS = ("patient_id", "patient_name", "study_description",
                     "study_date", "study_time", "accession_number", "study_id")


def make_study(out_dir, series_specs, study_uid=None, **common):
    """Writes a multi-series study: one sub-directory of out_dir per series.

    series_specs: list of dicts of make_ct_series keyword arguments (at least
    "slices"; optional "subdir" names the series directory). Keyword arguments
    given here (`common`, e.g. patient_id, rows, cols) apply to every series
    unless a spec overrides them. All series share the StudyInstanceUID and,
    unless a spec names its own, one FrameOfReferenceUID. SeriesNumber defaults
    to the position in the list (1-based); seeds default to seed + index.

    Returns {"study_uid": ..., "series": [{"series_uid", "series_number",
    "modality", "dir", "files"}]}.
    """
    study_uid = study_uid or generate_uid()
    common = dict(common)
    common.setdefault("frame_of_reference_uid", generate_uid())
    base_seed = common.pop("seed", 0)
    result = {"study_uid": study_uid, "series": []}
    for idx, spec in enumerate(series_specs):
        kw = dict(common)
        kw.update(spec)
        kw.pop("study_uid", None)
        subdir = kw.pop("subdir", None)
        slices = kw.pop("slices")
        kw.setdefault("series_number", idx + 1)
        kw.setdefault("seed", base_seed + idx)
        kw.setdefault("series_uid", generate_uid())
        modality = kw.setdefault("modality", "CT")
        if subdir is None:
            subdir = "s%02d_%s" % (idx + 1, modality)
        sdir = os.path.join(out_dir, subdir)
        files = make_ct_series(sdir, slices, study_uid=study_uid, **kw)
        result["series"].append({
            "series_uid": kw["series_uid"],
            "series_number": kw["series_number"],
            "modality": modality,
            "dir": sdir,
            "files": files,
        })
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a synthetic CT study.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--slices", type=int, required=True, help="slices per series")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=512)
    ap.add_argument("--series", type=int, default=1, help="number of series")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modality", default="CT")
    ap.add_argument("--patient-id", default="TEST0001")
    ap.add_argument("--study-uid", default=None)
    args = ap.parse_args(argv)
    if args.series < 1:
        ap.error("--series must be >= 1")
    specs = [{"slices": args.slices, "modality": args.modality,
              "series_description": "Synthetic axial series %d" % (k + 1)}
             for k in range(args.series)]
    study = make_study(args.out, specs, study_uid=args.study_uid,
                       rows=args.rows, cols=args.cols, seed=args.seed,
                       patient_id=args.patient_id)
    summary = {
        "study_uid": study["study_uid"],
        "series": [{"series_uid": s["series_uid"], "dir": s["dir"],
                    "instances": len(s["files"])} for s in study["series"]],
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
