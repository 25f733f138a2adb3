#!/usr/bin/python3
"""Checks a DICOM Segmentation written by ainode against its label volume.

    verify_seg.py SEG LABELS.raw NX NY NZ SOURCE_PATHS... [--frames F0,F1,...]

LABELS.raw holds NZ x NY x NX bytes (row-major); slice k lies on frame
--frames[k] (0-based, default 0) of SOURCE_PATHS[k]. The SEG is decoded
independently of the writer (pydicom, numpy bit unpacking) and must:

  - share Patient, Study and Frame of Reference with the sources, in a new
    series; list every source instance in the Common Instance Reference;
  - for every frame: reference an existing segment, derive from the source
    frame whose ImagePositionPatient equals the frame's, and hold exactly
    (labels[k] == segment) for that source slice k;
  - have a frame for every (slice, segment) with voxels, in segment-then-
    slice order; a segment without voxels has exactly one, empty, frame.

Prints a summary and exits 0, or prints the first mismatch and exits 1.
"""

import argparse
import sys

import numpy as np
import pydicom

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class Mismatch(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Mismatch(msg)


def code_of(item):
    return (str(item.CodeValue), str(item.CodingSchemeDesignator))


def _macro(item, shared, seq):
    """First item of functional group SEQ, per-frame before shared."""
    for holder in (item, shared):
        if holder is not None and seq in holder and len(holder[seq].value):
            return holder[seq].value[0]
    return None


def _floats(ds, kw):
    v = ds.get(kw) if ds is not None else None
    if v is None or v == "":
        return None
    return [float(x) for x in (v if isinstance(v, (list, pydicom.multival.MultiValue)) else [v])]


def source_geometry(ds):
    """Position, orientation, spacing and thickness of every frame of a source."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        out = []
        for item in ds.PerFrameFunctionalGroupsSequence:
            pos = _macro(item, shared, "PlanePositionSequence")
            ori = _macro(item, shared, "PlaneOrientationSequence")
            pix = _macro(item, shared, "PixelMeasuresSequence")
            out.append({"pos": _floats(pos, "ImagePositionPatient"),
                        "ori": _floats(ori, "ImageOrientationPatient"),
                        "spacing": _floats(pix, "PixelSpacing"),
                        "thickness": _floats(pix, "SliceThickness")})
        return out
    return [{"pos": _floats(ds, "ImagePositionPatient"),
             "ori": _floats(ds, "ImageOrientationPatient"),
             "spacing": _floats(ds, "PixelSpacing"),
             "thickness": _floats(ds, "SliceThickness")}]


def verify(args):
    nx, ny, nz = args.nx, args.ny, args.nz
    expect(len(args.sources) == nz, "%d source paths for %d slices" % (len(args.sources), nz))
    frames = [0] * nz
    if args.frames:
        frames = [int(f) for f in args.frames.split(",")]
        expect(len(frames) == nz, "%d frame numbers for %d slices" % (len(frames), nz))
    labels = np.fromfile(args.labels, dtype=np.uint8)
    expect(labels.size == nx * ny * nz, "labels file has %d bytes, expected %d"
           % (labels.size, nx * ny * nz))
    labels = labels.reshape(nz, ny, nx)

    # Sources: slice k -> (SOP class, SOP instance, frame, position).
    cache = {}
    slices = []
    for k, path in enumerate(args.sources):
        if path not in cache:
            cache[path] = pydicom.dcmread(path, stop_before_pixels=True)
        ds = cache[path]
        geom = source_geometry(ds)
        expect(frames[k] < len(geom), "slice %d: frame %d not in source" % (k, frames[k]))
        multiframe = "NumberOfFrames" in ds
        slice_ = dict(geom[frames[k]])
        slice_.update({"cls": str(ds.SOPClassUID), "uid": str(ds.SOPInstanceUID),
                       "frame": frames[k] + 1 if multiframe else None})
        slices.append(slice_)
    by_ref = {(s["uid"], s["frame"]): k for k, s in enumerate(slices)}
    # A source without Slice Thickness: the SEG gives the distance between slices.
    ori0 = np.array(slices[0]["ori"])
    normal = np.cross(ori0[:3], ori0[3:])
    along = sorted(float(np.dot(normal, s["pos"])) for s in slices)
    gaps = [b - a for a, b in zip(along, along[1:]) if b - a > 1e-6]
    slice_gap = min(gaps) if gaps else None
    first = cache[args.sources[0]]

    seg = pydicom.dcmread(args.seg)
    expect(seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian,
           "transfer syntax %s" % seg.file_meta.TransferSyntaxUID)
    expect(seg.SOPClassUID == SEG_STORAGE, "SOP class %s" % seg.SOPClassUID)
    expect(seg.Modality == "SEG", "modality %s" % seg.Modality)
    expect(seg.SegmentationType == "BINARY", "segmentation type %s" % seg.SegmentationType)
    expect(seg.BitsAllocated == 1 and seg.BitsStored == 1, "not 1-bit")
    expect(seg.Rows == ny and seg.Columns == nx, "SEG is %dx%d, labels %dx%d"
           % (seg.Columns, seg.Rows, nx, ny))

    # Same patient, study and frame of reference; a new series.
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        expect(str(seg.get(kw, "")) == str(first.get(kw, "")),
               "%s differs from the source" % kw)
    expect(seg.SeriesInstanceUID != first.SeriesInstanceUID, "series UID of the source reused")
    expect(seg.SOPInstanceUID not in {s["uid"] for s in slices}, "SOP instance UID reused")

    # Common Instance Reference: every source instance.
    listed = set()
    for series in seg.ReferencedSeriesSequence:
        for inst in series.ReferencedInstanceSequence:
            listed.add((str(inst.ReferencedSOPClassUID), str(inst.ReferencedSOPInstanceUID)))
    wanted = {(s["cls"], s["uid"]) for s in slices}
    expect(listed == wanted, "Common Instance Reference lists %d instances, sources have %d"
           % (len(listed), len(wanted)))

    # Segments 1..n.
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    expect(numbers == list(range(1, len(numbers) + 1)), "segment numbers %r" % numbers)
    for s in seg.SegmentSequence:
        expect(s.SegmentAlgorithmType == "AUTOMATIC", "segment %d algorithm type" % s.SegmentNumber)
        expect("SegmentAlgorithmName" in s, "segment %d has no algorithm name" % s.SegmentNumber)

    # Pixel data: all frames' bits, contiguous, least significant bit first.
    nframes = int(seg.NumberOfFrames)
    pfg = seg.PerFrameFunctionalGroupsSequence
    expect(len(pfg) == nframes, "%d per-frame items for %d frames" % (len(pfg), nframes))
    bits = np.unpackbits(np.frombuffer(seg.PixelData, dtype=np.uint8), bitorder="little")
    expect(bits.size >= nframes * ny * nx, "pixel data too short")
    pixels = bits[:nframes * ny * nx].reshape(nframes, ny, nx)

    shared = seg.SharedFunctionalGroupsSequence[0]
    covered = {}
    order = []
    for i, item in enumerate(pfg):
        segnum = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        expect(segnum in numbers, "frame %d: segment %d does not exist" % (i + 1, segnum))
        deriv = item.DerivationImageSequence[0]
        expect(code_of(deriv.DerivationCodeSequence[0]) == ("113076", "DCM"),
               "frame %d: derivation code" % (i + 1))
        src = deriv.SourceImageSequence[0]
        expect(code_of(src.PurposeOfReferenceCodeSequence[0]) == ("121322", "DCM"),
               "frame %d: purpose of reference" % (i + 1))
        frame_no = int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else None
        key = (str(src.ReferencedSOPInstanceUID), frame_no)
        expect(key in by_ref, "frame %d: derived from an unknown source %r" % (i + 1, key))
        k = by_ref[key]
        expect(str(src.ReferencedSOPClassUID) == slices[k]["cls"], "frame %d: SOP class" % (i + 1))
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        expect(np.allclose(ipp, slices[k]["pos"], atol=1e-4),
               "frame %d: position %r, its source slice %d is at %r"
               % (i + 1, ipp, k, slices[k]["pos"]))
        ori = _macro(item, shared, "PlaneOrientationSequence")
        pix = _macro(item, shared, "PixelMeasuresSequence")
        expect(ori is not None and pix is not None, "frame %d: no orientation or pixel measures"
               % (i + 1))
        expect(np.allclose(_floats(ori, "ImageOrientationPatient"), slices[k]["ori"], atol=1e-4),
               "frame %d: orientation differs from its source" % (i + 1))
        expect(np.allclose(_floats(pix, "PixelSpacing"), slices[k]["spacing"], atol=1e-6),
               "frame %d: pixel spacing differs from its source" % (i + 1))
        thickness = _floats(pix, "SliceThickness")
        want_thickness = slices[k]["thickness"] or ([slice_gap] if slice_gap else None)
        if want_thickness is None:
            expect(thickness is None, "frame %d: slice thickness made up" % (i + 1))
        else:
            expect(thickness is not None and np.allclose(thickness, want_thickness, atol=1e-5),
                   "frame %d: slice thickness %r, expected %r" % (i + 1, thickness, want_thickness))
        div = [int(v) for v in item.FrameContentSequence[0].DimensionIndexValues]
        expect(len(div) == 2 and div[0] == segnum, "frame %d: dimension index values %r"
               % (i + 1, div))
        want = (labels[k] == segnum).astype(np.uint8)
        if not np.array_equal(pixels[i], want):
            diff = int(np.count_nonzero(pixels[i] != want))
            raise Mismatch("frame %d (segment %d, slice %d): %d pixels differ"
                           % (i + 1, segnum, k, diff))
        expect((k, segnum) not in covered, "slice %d segment %d has two frames" % (k, segnum))
        covered[(k, segnum)] = i
        order.append((segnum, k))
    expect(order == sorted(order), "frames are not ordered by segment, then slice")

    for segnum in numbers:
        present = [k for k in range(nz) if np.any(labels[k] == segnum)]
        mine = [k for (k, s) in covered if s == segnum]
        if present:
            missing = sorted(set(present) - set(mine))
            expect(not missing,
                   "segment %d: slices %r have voxels but no frame" % (segnum, missing))
        else:
            expect(len(mine) == 1, "segment %d without voxels has %d frames" % (segnum, len(mine)))

    # AI provenance.
    ce = seg.get("ContributingEquipmentSequence")
    expect(ce is not None and len(ce) >= 1, "no Contributing Equipment Sequence")
    expect("PurposeOfReferenceCodeSequence" in ce[0], "contributing equipment without purpose")

    print("OK: %d frames, %d segments, %d source instances" % (nframes, len(numbers), len(wanted)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seg")
    ap.add_argument("labels")
    ap.add_argument("nx", type=int)
    ap.add_argument("ny", type=int)
    ap.add_argument("nz", type=int)
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--frames", help="0-based source frame of each slice, comma-separated")
    args = ap.parse_args(argv)
    try:
        verify(args)
    except Mismatch as e:
        print("MISMATCH: %s" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
