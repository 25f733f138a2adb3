#!/usr/bin/python3
"""Writes hostile image files, made for real, for tests/unit/test_hostile_geometry.c.

    /usr/bin/python3 tests/tools/make_hostile_fixtures.py OUTDIR

Needs Debian's python3-pydicom and pydicom's test files (AINODE_PYDICOM_DATA),
and the image fixtures of tests/data/image (AINODE_TEST_DATA). Each file is a
small, otherwise valid CT (or a copy of a real compressed file) with one lie
in its header:

  normal_1.dcm, normal_2.dcm   a valid 2-slice 4x4 CT series (the control)
  spacing_huge.dcm             Pixel Spacing 1e6\\1e6
  spacing_zero.dcm             Pixel Spacing 0\\0.7
  spacing_negative.dcm         Pixel Spacing -0.5\\0.7
  spacing_nan.dcm              Pixel Spacing NaN\\0.7
  position_1e308_oblique.dcm   Image Position 1e308\\1e308\\-1e308, oblique orientation
  position_nan.dcm             Image Position nan\\0\\0
  position_inf.dcm             Image Position 0\\-inf\\0
  orientation_inf.dcm          Image Orientation inf\\0\\0\\0\\1\\0
  orientation_skewed.dcm       rows 45 degrees apart (not orthogonal)
  orientation_long.dcm         a row cosine of length 2
  gfov_inf.dcm                 3 frames, Grid Frame Offset Vector 0\\inf\\2
  gfov_huge.dcm                3 frames, Grid Frame Offset Vector 0\\1e300\\2e300
  frames_4m.dcm                4 000 000 frames of 1x1 pixel (4 MB of pixel data)
  rows_cols_over_cap.dcm       Rows = Columns = 16384 (one frame of 2^28 pixels)
  image_over_cap.dcm           32 frames of 4096 x 4096 (2^29 pixels)
  j2k_siz_huge.dcm             MR_small_jp2klossless (64x64) whose SIZ claims 40000x40000
  j2k_siz_huge_rows.dcm        ... and Rows = Columns = 40000
  j2k_csiz_3.dcm               ... whose SIZ claims 3 components
  j2k_fewer_fragments.dcm      ... with Number of Frames 3 and one fragment
  jpeg_sof_huge.dcm            MR_small_jpeg_lossless (64x64) whose SOF claims 30000x30000
  jpegls_sof_huge.dcm          MR_small_jpeg_ls_lossless whose SOF55 claims 30000x30000
  j2k_truncated.dcm            a J2K codestream cut inside its SIZ marker
  j2k_jp2_bad_box.dcm          a JP2 wrapper whose first box runs past the end
  jpeg_truncated.dcm, jpegls_truncated.dcm  streams cut inside their frame header
  deflate_bomb.dcm             a valid 16x16 CT, deflated, with a private value of
                               256 MiB of zeros (the file is about 256 KB)
"""
import os
import struct
import sys
import warnings

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

warnings.simplefilter("ignore")  # pydicom warns about the invalid DS values we want

HERE = os.path.dirname(os.path.abspath(__file__))
PYDICOM_DATA = os.environ.get(
    "AINODE_PYDICOM_DATA", "/usr/lib/python3/dist-packages/pydicom/data/test_files")
TEST_DATA = os.environ.get("AINODE_TEST_DATA", os.path.join(HERE, "..", "data"))

CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "2.25.27182818284590452353602874713526"
OBLIQUE = ["0.7071068", "0.7071068", "0", "0", "0", "-1"]


def ct(path, n, rows=4, cols=4, frames=None, position=("0", "0", "0"),
       orientation=("1", "0", "0", "0", "1", "0"), spacing=("0.7", "0.7"), pixels=True):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = "%s.%d" % (ROOT, n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + ".1"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ROOT + ".2"
    ds.SeriesInstanceUID = ROOT + ".3"
    ds.FrameOfReferenceUID = ROOT + ".4"
    ds.PatientName = "Hostile^Geometry"
    ds.PatientID = "HOSTILE"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = n
    ds.add_new(0x00200032, "DS", list(position))       # ImagePositionPatient
    ds.add_new(0x00200037, "DS", list(orientation))    # ImageOrientationPatient
    ds.add_new(0x00280030, "DS", list(spacing))        # PixelSpacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    if frames is not None:
        ds.NumberOfFrames = frames
    if pixels:
        count = rows * cols * (frames or 1)
        ds.PixelData = (np.arange(count, dtype="<u2") % 4096 + 1000).tobytes()
    else:  # a token: the header is refused before its length matters
        ds.PixelData = b"\0\0"
    return ds


def save(ds, out, name):
    ds.save_as(os.path.join(out, name), write_like_original=False)


def geometry(out):
    save(ct("", 10, position=("0", "0", "0")), out, "normal_1.dcm")
    save(ct("", 11, position=("0", "0", "1.5")), out, "normal_2.dcm")
    save(ct("", 20, spacing=("1e6", "1e6")), out, "spacing_huge.dcm")
    save(ct("", 21, spacing=("0", "0.7")), out, "spacing_zero.dcm")
    save(ct("", 22, spacing=("-0.5", "0.7")), out, "spacing_negative.dcm")
    save(ct("", 23, spacing=("NaN", "0.7")), out, "spacing_nan.dcm")
    save(ct("", 24, position=("1e308", "1e308", "-1e308"), orientation=OBLIQUE), out,
         "position_1e308_oblique.dcm")
    save(ct("", 25, position=("nan", "0", "0")), out, "position_nan.dcm")
    save(ct("", 26, position=("0", "-inf", "0")), out, "position_inf.dcm")
    save(ct("", 27, orientation=("inf", "0", "0", "0", "1", "0")), out, "orientation_inf.dcm")
    save(ct("", 28, orientation=("1", "0", "0", "0.7071068", "0.7071068", "0")), out,
         "orientation_skewed.dcm")
    save(ct("", 29, orientation=("2", "0", "0", "0", "1", "0")), out, "orientation_long.dcm")
    for name, offsets in (("gfov_inf.dcm", ["0", "inf", "2"]),
                          ("gfov_huge.dcm", ["0", "1e300", "2e300"])):
        ds = ct("", 30 + len(name), frames=3)
        ds.add_new(0x3004000C, "DS", offsets)           # GridFrameOffsetVector
        ds.add_new(0x00280009, "AT", [0x3004000C])      # FrameIncrementPointer
        save(ds, out, name)


def sizes(out):
    # 4 million frames of one 8-bit pixel: 4 MB of pixel data.
    ds = ct("", 40, rows=1, cols=1, frames=4000000, pixels=False)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = bytes(4000000)
    save(ds, out, "frames_4m.dcm")
    save(ct("", 41, rows=16384, cols=16384, pixels=False), out, "rows_cols_over_cap.dcm")
    save(ct("", 42, rows=4096, cols=4096, frames=32, pixels=False), out, "image_over_cap.dcm")


def patched_j2k(out):
    src = pydicom.dcmread(os.path.join(PYDICOM_DATA, "MR_small_jp2klossless.dcm"))
    frame = next(generate_pixel_data_frame(src.PixelData, 1))
    assert frame[:4] == b"\xff\x4f\xff\x51", "not a bare J2K codestream"

    def siz(data, width=None, height=None, comps=None):
        b = bytearray(data)
        if width is not None:   # Xsiz, Ysiz (XOsiz, YOsiz are 0 here)
            struct.pack_into(">II", b, 8, width, height)
            struct.pack_into(">II", b, 24, width, height)  # one tile
        if comps is not None:
            struct.pack_into(">H", b, 40, comps)
        return bytes(b)

    def write(name, codestream, rows=64, cols=64, frames=None, fragments=1):
        ds = src.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "%s.%d" % (
            ROOT, 50 + len(name))
        ds.Rows, ds.Columns = rows, cols
        if frames:
            ds.NumberOfFrames = frames
        ds.PixelData = encapsulate([codestream] * fragments)
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
        ds.save_as(os.path.join(out, name), write_like_original=False)

    huge = siz(frame, 40000, 40000)
    write("j2k_siz_huge.dcm", huge)
    write("j2k_siz_huge_rows.dcm", huge, rows=40000, cols=40000)
    write("j2k_csiz_3.dcm", siz(frame, comps=3))
    write("j2k_fewer_fragments.dcm", frame, frames=3)
    # Cut inside its SIZ marker; a JP2 wrapper whose first box runs past the end.
    write("j2k_truncated.dcm", frame[:20])
    jp2_sig = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    write("j2k_jp2_bad_box.dcm", jp2_sig + struct.pack(">I", 0xFFFFFFF0) + b"jp2c" + frame)


def sof(data, marker, width, height):
    """DATA with the first frame header MARKER (0xC3, 0xF7, ...) claiming WIDTH x HEIGHT."""
    b = bytearray(data)
    pos = 2
    while pos + 4 <= len(b):
        assert b[pos] == 0xFF, "lost in the JPEG markers"
        m = b[pos + 1]
        if m == marker:
            struct.pack_into(">HH", b, pos + 5, height, width)
            return bytes(b)
        pos += 2 + struct.unpack_from(">H", b, pos + 2)[0]
    raise AssertionError("no SOF marker 0x%02X" % marker)


def patched_jpeg(out):
    for name, src_path in (("jpeg_sof_huge.dcm", os.path.join(TEST_DATA, "image",
                                                              "MR_small_jpeg_lossless.dcm")),
                           ("jpegls_sof_huge.dcm", os.path.join(PYDICOM_DATA,
                                                                "MR_small_jpeg_ls_lossless.dcm"))):
        ds = pydicom.dcmread(src_path)
        frame = next(generate_pixel_data_frame(ds.PixelData, 1))
        marker = 0xF7 if "jpegls" in name else None
        if marker is None:  # whichever SOFn the encoder chose
            pos = 2
            while True:
                m = frame[pos + 1]
                if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
                    marker = m
                    break
                pos += 2 + struct.unpack_from(">H", frame, pos + 2)[0]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "%s.%d" % (
            ROOT, 70 + len(name))
        for fname, data in ((name, sof(frame, marker, 30000, 30000)),
                            (name.replace("sof_huge", "truncated"), frame[:pos_of_sof(frame)])):
            ds.PixelData = encapsulate([data])
            ds["PixelData"].is_undefined_length = True
            ds["PixelData"].VR = "OB"
            ds.save_as(os.path.join(out, fname), write_like_original=False)


def pos_of_sof(data):
    """Where the first SOFn of DATA starts (its header cut there has none)."""
    pos = 2
    while True:
        m = data[pos + 1]
        if (0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC)) or m == 0xF7:
            return pos + 4  # the marker and its length, no more
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]


def deflate_bomb(out):
    ds = ct("", 50, rows=16, cols=16)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00090010, "LO", "AINODE TEST")      # private creator
    ds.add_new(0x00091010, "OB", bytes(256 << 20))  # 256 MiB of zeros
    save(ds, out, "deflate_bomb.dcm")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    geometry(out)
    sizes(out)
    deflate_bomb(out)
    patched_j2k(out)
    patched_jpeg(out)


if __name__ == "__main__":
    main()
