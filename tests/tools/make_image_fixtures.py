#!/usr/bin/python3
"""Writes the image fixtures of tests/unit/test_image.c into tests/data/image/.

Needs Debian's python3-pydicom and DCMTK's dcmcjpeg. Run again to reproduce:
    /usr/bin/python3 tests/tools/make_image_fixtures.py [OUTDIR]

  enhanced_ct_3frames.dcm   Enhanced CT, 3 frames of 4x5, 12 of 16 bits: per-frame
                            Plane Position and rescale (frame 3: slope 2),
                            shared orientation and spacing.
  signed_12bit.dcm          MR, signed 12 of 16 bits, upper bits left zero.
  palette_color.dcm         PALETTE COLOR, one sample (refused).
  modality_lut.dcm          Modality LUT Sequence instead of rescale (refused).
  MR_small_jpeg_lossless.dcm  pydicom's MR_small, JPEG lossless SV1 (dcmcjpeg).
  image_dfl_jpeg_baseline.dcm pydicom's image_dfl, JPEG baseline (dcmcjpeg).
  MR_small_jp2_wrapped.dcm  MR_small_jp2klossless with its codestream wrapped
                            in a JP2 file, as some writers do.
  j2k_2frames_bot.dcm       pydicom's 693_J2KI as 2 frames of 2 fragments, with
                            a Basic Offset Table;
  j2k_2frames.dcm           ... 2 frames, one fragment each, no offset table;
  j2k_3frames_fragmented.dcm  ... 3 frames of 2 fragments, no offset table.
  ct_slope_half.dcm         CT 2x3, rescale slope 0.5: values that are not integers.
  ct_beyond_int16.dcm       CT 2x3, unsigned 16 bits, intercept -1024: values up to
                            64511, beyond int16.
"""
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import defragment_data, encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "data", "image")
PYDICOM_DATA = os.environ.get(
    "AINODE_PYDICOM_DATA", "/usr/lib/python3/dist-packages/pydicom/data/test_files")

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "2.25.31415926535897932384626433832795"  # fixed UIDs: reproducible files


def base_dataset(sop_class, sop_instance, filename):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + ".1"
    ds = FileDataset(filename, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = ROOT + ".2"
    ds.SeriesInstanceUID = ROOT + ".3"
    ds.FrameOfReferenceUID = ROOT + ".4"
    ds.PatientName = "Fixture^Image"
    ds.PatientID = "FIXTURE"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    return ds


def item(**kw):
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def enhanced_ct(path):
    ds = base_dataset(ENHANCED_CT, ROOT + ".10", path)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = 3
    ds.Rows = 4
    ds.Columns = 5
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 0, -1])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.5, 0.75], SliceThickness=2.5)]),
    )])
    frames = []
    for f in range(3):
        slope, intercept = (2, -1000) if f == 2 else (1, -1024)
        frames.append(item(
            FrameContentSequence=Sequence([item(FrameAcquisitionNumber=1)]),
            PlanePositionSequence=Sequence([item(ImagePositionPatient=[-10, 20.5 + 2.5 * f, 30])]),
            PixelValueTransformationSequence=Sequence([item(
                RescaleIntercept=intercept, RescaleSlope=slope, RescaleType="HU")]),
        ))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    # stored value 1000 + 100*frame + 5*row + col
    f, r, c = np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    px = (1000 + 100 * f + 5 * r + c).astype(np.uint16)
    px[0, 0, 0] |= 0xF000  # bits above Bits Stored must be ignored
    ds.PixelData = px.tobytes()
    ds.save_as(path, write_like_original=False)


def signed_12bit(path):
    ds = base_dataset(MR, ROOT + ".11", path)
    ds.Modality = "MR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 2
    ds.Columns = 3
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    values = [-2048, -5, -1, 0, 1, 2047]
    ds.PixelData = struct.pack("<6H", *[v & 0x0FFF for v in values])
    ds.save_as(path, write_like_original=False)


def ct_rescaled(path, uid, slope, intercept, values):
    """A 2x3 CT slice of unsigned 16-bit stored VALUES and the rescale given."""
    ds = base_dataset(CT, ROOT + uid, path)
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 2
    ds.Columns = 3
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.PixelData = struct.pack("<6H", *values)
    ds.save_as(path, write_like_original=False)


def palette_and_lut(palette_path, lut_path):
    """Single-sample images whose stored values are not the real values."""
    for path, uid in ((palette_path, ".12"), (lut_path, ".13")):
        signed_12bit(path)
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ROOT + uid
        ds.PixelRepresentation = 0
        if path == palette_path:
            ds.PhotometricInterpretation = "PALETTE COLOR"
            for k in range(3):  # Red, Green, Blue
                ds.add_new(0x00281101 + k, "US", [256, 0, 16])
                ds.add_new(0x00281201 + k, "OW", bytes(2 * 256))
        else:
            lut = Dataset()
            lut.add_new(0x00283002, "US", [256, 0, 16])  # LUT Descriptor
            lut.ModalityLUTType = "OD"
            lut.add_new(0x00283006, "US", list(range(256)))  # LUT Data
            ds.ModalityLUTSequence = Sequence([lut])
        ds.save_as(path, write_like_original=False)


def dcmcjpeg(args, src, dst):
    tool = shutil.which("dcmcjpeg")
    if not tool:
        sys.exit("make_image_fixtures.py: required program 'dcmcjpeg' is not installed "
                 "(Debian package dcmtk)")
    subprocess.run([tool] + args + [src, dst], check=True)


def jp2_wrapped(path):
    ds = pydicom.dcmread(os.path.join(PYDICOM_DATA, "MR_small_jp2klossless.dcm"))
    cs = defragment_data(ds.PixelData)

    def box(kind, payload):
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    bpc = (ds.BitsStored - 1) | (0x80 if ds.PixelRepresentation else 0)
    ihdr = box(b"ihdr", struct.pack(">IIHBBBB", ds.Rows, ds.Columns, 1, bpc, 7, 0, 0))
    colr = box(b"colr", struct.pack(">BBBI", 1, 0, 0, 17))  # greyscale
    jp2 = (box(b"jP  ", b"\r\n\x87\n") + box(b"ftyp", b"jp2 " + struct.pack(">I", 0) + b"jp2 ")
           + box(b"jp2h", ihdr + colr) + box(b"jp2c", cs))
    ds.PixelData = encapsulate([jp2])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(path, write_like_original=False)


def j2k_multiframe(path, frames, fragments_per_frame, has_bot):
    """pydicom's 693_J2KI codestream repeated as FRAMES frames."""
    ds = pydicom.dcmread(os.path.join(PYDICOM_DATA, "693_J2KI.dcm"))
    cs = defragment_data(ds.PixelData)
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([cs] * frames, fragments_per_frame, has_bot)
    ds.save_as(path, write_like_original=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    enhanced_ct(os.path.join(OUT, "enhanced_ct_3frames.dcm"))
    signed_12bit(os.path.join(OUT, "signed_12bit.dcm"))
    palette_and_lut(os.path.join(OUT, "palette_color.dcm"), os.path.join(OUT, "modality_lut.dcm"))
    dcmcjpeg(["+e1", "+un"], os.path.join(PYDICOM_DATA, "MR_small.dcm"),
             os.path.join(OUT, "MR_small_jpeg_lossless.dcm"))
    dcmcjpeg(["+eb", "+un", "+q", "90"], os.path.join(PYDICOM_DATA, "image_dfl.dcm"),
             os.path.join(OUT, "image_dfl_jpeg_baseline.dcm"))
    jp2_wrapped(os.path.join(OUT, "MR_small_jp2_wrapped.dcm"))
    j2k_multiframe(os.path.join(OUT, "j2k_2frames_bot.dcm"), 2, 2, True)
    j2k_multiframe(os.path.join(OUT, "j2k_2frames.dcm"), 2, 1, False)
    j2k_multiframe(os.path.join(OUT, "j2k_3frames_fragmented.dcm"), 3, 2, False)
    ct_rescaled(os.path.join(OUT, "ct_slope_half.dcm"), ".14", "0.5", "-1024",
                [0, 1, 2, 3, 2048, 4095])
    ct_rescaled(os.path.join(OUT, "ct_beyond_int16.dcm"), ".15", "1", "-1024",
                [0, 1024, 2000, 33791, 33792, 65535])


if __name__ == "__main__":
    main()
