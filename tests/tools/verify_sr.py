#!/usr/bin/python3
"""Checks a TID 1500 measurement report written by ainode's dicom_write_sr.

    verify_sr.py SR SEG_SOP_UID SOURCE_SERIES_UID SEGMENT... [options]

SEGMENT is NUMBER:LABEL:TYPE_CODE=VOLUME_ML (e.g. 1:Bone:272673000=12.5), or
just LABEL=VOLUME_ML to check only the volume. Options:
    --source-dir DIR     the source series: Patient/Study attributes must equal
                         those of its files, which must all be in the image
                         library and the evidence
    --seg-series UID     Series Instance UID of the SEG (checked in the evidence)
    --algorithm NAME     expected Algorithm Name (and --algorithm-version VER)
    --series-number N    expected Series Number of the SR
    --labels RAW NX NY NZ  the label volume (NZ x NY x NX bytes) and
    --slices FILE...     the single-frame source image of each slice, in order:
                         each segment with voxels must have a planar group
                         (TID 1410) whose outline, image, area and longest
                         diameter equal what is computed here from the
                         labels; a segment without voxels must have none
    --model-sha256 HEX, --manifest-sha256 HEX
                         expected Algorithm Parameters of every measurement
    --intended-use TEXT  the expected intended-use comment
    --no-trust           no digest and no intended use may be recorded

Every planar group's outline must be a closed POLYLINE along pixel edges on
the image it references. The codes the writer chooses must carry the
meanings their context groups give. Reads the SR with pydicom, walks the
content tree and prints every mismatch; exits 0 when there is none, 1
otherwise (2 on bad usage).
"""

import argparse
import glob
import math
import os
import sys

import numpy as np
import pydicom

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

# Concept names (CodeValue, CodingSchemeDesignator).
IMAGING_MEASUREMENT_REPORT = ("126000", "DCM")
LANGUAGE = ("121049", "DCM")
OBSERVER_TYPE = ("121005", "DCM")
DEVICE = ("121007", "DCM")
DEVICE_OBSERVER_UID = ("121012", "DCM")
DEVICE_OBSERVER_MODEL = ("121015", "DCM")
PROCEDURE_REPORTED = ("121058", "DCM")
IMAGE_LIBRARY = ("111028", "DCM")
IMAGE_LIBRARY_GROUP = ("126200", "DCM")
IMAGING_MEASUREMENTS = ("126010", "DCM")
MEASUREMENT_GROUP = ("125007", "DCM")
TRACKING_IDENTIFIER = ("112039", "DCM")
TRACKING_UID = ("112040", "DCM")
FINDING = ("121071", "DCM")
REFERENCED_SEGMENT = ("121191", "DCM")
SOURCE_SERIES = ("121232", "DCM")
VOLUME = ("118565006", "SCT")
ALGORITHM_NAME = ("111001", "DCM")
ALGORITHM_VERSION = ("111003", "DCM")
ALGORITHM_PARAMETERS = ("111002", "DCM")
UCUM_ML = ("ml", "UCUM")
UCUM_MM = ("mm", "UCUM")
UCUM_MM2 = ("mm2", "UCUM")
IMAGE_REGION = ("111030", "DCM")
AREA = ("42798000", "SCT")
LONG_AXIS = ("103339001", "SCT")
QUALITATIVE_EVALUATIONS = ("C0034375", "UMLS")
COMMENT = ("121106", "DCM")

# The meanings of the codes the writer picks itself, as their context
# groups give them (DCMTK 3.6.7's cmr: CID 7181 units, CID 7469
# measurements); ml is in no group: UCUM's name for it.
MEANINGS = {
    UCUM_ML: "milliliter",
    UCUM_MM: "millimeter",
    UCUM_MM2: "square millimeter",
    VOLUME: "Volume",
    AREA: "Area",
    LONG_AXIS: "Long Axis",
    IMAGE_REGION: "Image Region",
    MEASUREMENT_GROUP: "Measurement Group",
    IMAGING_MEASUREMENTS: "Imaging Measurements",
    TRACKING_IDENTIFIER: "Tracking Identifier",
    TRACKING_UID: "Tracking Unique Identifier",
    FINDING: "Finding",
    ALGORITHM_NAME: "Algorithm Name",
    ALGORITHM_VERSION: "Algorithm Version",
    ALGORITHM_PARAMETERS: "Algorithm Parameters",
    COMMENT: "Comment",
}

PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber",
)


class Checker:
    def __init__(self):
        self.problems = []

    def expect(self, ok, message):
        if not ok:
            self.problems.append(message)
        return ok


def code(seq):
    """(CodeValue, CodingSchemeDesignator) of the first item of a code sequence."""
    if not seq:
        return None
    item = seq[0]
    return (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")))


def concept(item):
    return code(item.get("ConceptNameCodeSequence"))


def children(item, name=None, value_type=None):
    out = []
    for child in item.get("ContentSequence", []):
        if name is not None and concept(child) != name:
            continue
        if value_type is not None and child.get("ValueType") != value_type:
            continue
        out.append(child)
    return out


def one(chk, item, name, value_type, where):
    found = children(item, name, value_type)
    chk.expect(len(found) == 1, "%s: expected one %s %s, found %d"
               % (where, value_type, name, len(found)))
    return found[0] if found else None


def parse_segment(spec):
    """NUMBER:LABEL:TYPE_CODE=VOLUME or LABEL=VOLUME."""
    if "=" not in spec:
        raise ValueError("segment %r lacks =VOLUME" % spec)
    left, volume = spec.rsplit("=", 1)
    parts = left.split(":")
    if len(parts) == 3:
        number, label, type_code = int(parts[0]), parts[1], parts[2]
    elif len(parts) == 1:
        number, label, type_code = None, parts[0], None
    else:
        raise ValueError("segment %r: use NUMBER:LABEL:TYPE_CODE=VOLUME" % spec)
    return {"number": number, "label": label, "type": type_code, "volume": float(volume)}


def source_files(directory):
    files = []
    for path in sorted(glob.glob(os.path.join(directory, "*"))):
        if os.path.isfile(path):
            files.append(pydicom.dcmread(path, stop_before_pixels=True))
    return files


def check_header(chk, ds, args, sources):
    chk.expect(ds.get("SOPClassUID") == COMPREHENSIVE_3D_SR,
               "SOPClassUID %s is not Comprehensive 3D SR" % ds.get("SOPClassUID"))
    chk.expect(ds.get("Modality") == "SR", "Modality %r is not SR" % ds.get("Modality"))
    chk.expect(ds.get("CompletionFlag") == "COMPLETE",
               "CompletionFlag %r" % ds.get("CompletionFlag"))
    chk.expect(ds.get("VerificationFlag") == "UNVERIFIED",
               "VerificationFlag %r" % ds.get("VerificationFlag"))
    series = ds.get("SeriesInstanceUID")
    chk.expect(series and series != args.source_series,
               "the SR's SeriesInstanceUID is not a new series")
    if args.seg_series:
        chk.expect(series != args.seg_series, "the SR shares the SEG's series")
    if args.series_number is not None:
        chk.expect(str(ds.get("SeriesNumber")) == str(args.series_number),
                   "SeriesNumber %r, expected %d" % (ds.get("SeriesNumber"), args.series_number))
    chk.expect(bool(ds.get("Manufacturer")), "no Manufacturer")
    # Viewers list series by their date: the SR's is when it was made.
    for kw in ("SeriesDate", "SeriesTime"):
        chk.expect(bool(ds.get(kw)), "no %s" % kw)
    chk.expect(ds.get("SeriesDate") == ds.get("ContentDate"),
               "SeriesDate %r is not the ContentDate %r" % (ds.get("SeriesDate"),
                                                            ds.get("ContentDate")))
    if sources:
        first = sources[0]
        for kw in PATIENT_STUDY_KEYWORDS:
            chk.expect(str(ds.get(kw, "")) == str(first.get(kw, "")),
                       "%s %r differs from the source's %r" % (kw, ds.get(kw), first.get(kw)))


def check_evidence(chk, ds, args, sources):
    referenced = {}  # SOP Instance UID -> (series UID, SOP class)
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for inst in series.get("ReferencedSOPSequence", []):
                referenced[inst.ReferencedSOPInstanceUID] = (
                    series.SeriesInstanceUID, inst.ReferencedSOPClassUID)
    chk.expect(args.seg_uid in referenced, "the SEG is not in the evidence")
    if args.seg_uid in referenced:
        series, sop_class = referenced[args.seg_uid]
        chk.expect(sop_class == SEGMENTATION_STORAGE, "the SEG's evidence SOP class %s" % sop_class)
        if args.seg_series:
            chk.expect(series == args.seg_series,
                       "the SEG is in series %s, expected %s" % (series, args.seg_series))
    for src in sources:
        got = referenced.get(src.SOPInstanceUID)
        chk.expect(got == (src.SeriesInstanceUID, src.SOPClassUID),
                   "source %s is missing from the evidence or in the wrong series"
                   % src.SOPInstanceUID)


def check_context(chk, root, args, sources):
    chk.expect(concept(root) == IMAGING_MEASUREMENT_REPORT,
               "document title %s is not Imaging Measurement Report" % (concept(root),))
    tmpl = root.get("ContentTemplateSequence")
    chk.expect(bool(tmpl) and tmpl[0].get("TemplateIdentifier") == "1500",
               "the root does not name TID 1500")
    one(chk, root, LANGUAGE, "CODE", "report")
    observer = one(chk, root, OBSERVER_TYPE, "CODE", "report")
    if observer is not None:
        chk.expect(code(observer.ConceptCodeSequence) == DEVICE, "the observer is not a device")
    one(chk, root, DEVICE_OBSERVER_UID, "UIDREF", "report")
    model = one(chk, root, DEVICE_OBSERVER_MODEL, "TEXT", "report")
    if model is not None and args.algorithm:
        chk.expect(model.TextValue == args.algorithm,
                   "device observer model %r, expected %r" % (model.TextValue, args.algorithm))
    chk.expect(len(children(root, PROCEDURE_REPORTED, "CODE")) >= 1, "no procedure reported")

    library = one(chk, root, IMAGE_LIBRARY, "CONTAINER", "report")
    in_library = set()
    if library is not None:
        for group in children(library, IMAGE_LIBRARY_GROUP, "CONTAINER"):
            for entry in children(group, None, "IMAGE"):
                in_library.add(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    for src in sources:
        chk.expect(src.SOPInstanceUID in in_library,
                   "source %s is not in the image library" % src.SOPInstanceUID)


def load_labels(path, nx, ny, nz):
    data = np.fromfile(path, dtype=np.uint8)
    if data.size != nx * ny * nz:
        raise ValueError("%s holds %d bytes, not %d x %d x %d" % (path, data.size, nx, ny, nz))
    return data.reshape(nz, ny, nx)


def pieces(mask):
    """The 8-connected pieces of MASK as boolean masks, in the row-major
    order of their first pixels."""
    ny, nx = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for r, c in zip(*np.nonzero(mask)):
        if seen[r, c]:
            continue
        piece = np.zeros_like(mask, dtype=bool)
        stack = [(r, c)]
        seen[r, c] = True
        while stack:
            y, x = stack.pop()
            piece[y, x] = True
            for v in range(max(y - 1, 0), min(y + 2, ny)):
                for u in range(max(x - 1, 0), min(x + 2, nx)):
                    if mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        stack.append((v, u))
        out.append(piece)
    return out


def with_holes(piece):
    """PIECE and what it encloses: the background (4-connected, the
    counterpart of an 8-connected piece) that cannot reach the border."""
    ny, nx = piece.shape
    outside = np.zeros((ny + 2, nx + 2), dtype=bool)
    free = np.ones((ny + 2, nx + 2), dtype=bool)
    free[1:-1, 1:-1] = ~piece
    stack = [(0, 0)]
    outside[0, 0] = True
    while stack:
        y, x = stack.pop()
        for v, u in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= v < ny + 2 and 0 <= u < nx + 2 and free[v, u] and not outside[v, u]:
                outside[v, u] = True
                stack.append((v, u))
    return ~outside[1:-1, 1:-1]


def longest_distance_mm(piece, spacing):
    """The largest distance between two pixel corners of PIECE, in mm;
    SPACING is PixelSpacing (between rows, between columns)."""
    rows, cols = np.nonzero(piece)
    corners = set()
    for r, c in zip(rows.tolist(), cols.tolist()):
        corners.update(((c, r), (c + 1, r), (c, r + 1), (c + 1, r + 1)))
    pts = np.array(sorted(corners), dtype=float)
    pts[:, 0] *= spacing[1]
    pts[:, 1] *= spacing[0]
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(axis=2)).max())


def planar_expectations(labels, slice_files):
    """{segment number: what its planar group must hold}, computed from the
    label volume and the source file of each slice: the slice with the most
    voxels of the label (ties: the lowest), its largest 8-connected piece
    (ties: the first in row-major order), the area of all the label's
    pixels on that slice and the longest distance between two corners of
    the piece, both in mm."""
    out = {}
    for number in range(1, 256):
        per_slice = (labels == number).sum(axis=(1, 2))
        if per_slice.max() == 0:
            continue
        k = int(np.argmax(per_slice))
        mask = labels[k] == number
        found = pieces(mask)
        largest = max(found, key=lambda p: p.sum())  # max keeps the first of equals
        ds = pydicom.dcmread(slice_files[k], stop_before_pixels=True)
        spacing = [float(v) for v in ds.PixelSpacing]
        out[number] = {
            "slice": k,
            "sop_instance": str(ds.SOPInstanceUID),
            "sop_class": str(ds.SOPClassUID),
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "area_mm2": int(per_slice[k]) * spacing[0] * spacing[1],
            "diameter_mm": longest_distance_mm(largest, spacing),
            "region": with_holes(largest),
        }
    return out


def polygon_mask(points, rows, columns):
    """The pixels whose centres lie inside the closed polygon POINTS
    (column, row pairs on pixel corners), by the even-odd rule: a vertical
    edge at column x toggles, on its rows, every pixel left of it."""
    inside = np.zeros((rows, columns), dtype=bool)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 == x1 and y0 != y1:
            lo, hi = sorted((int(y0), int(y1)))
            inside[lo:hi, :int(x0)] ^= True
    return inside


def outline_problems(points, rows, columns):
    """What is wrong with POINTS as a closed outline along pixel edges of
    an image of ROWS x COLUMNS; empty when nothing is."""
    problems = []
    if len(points) < 5:
        problems.append("%d outline points, fewer than a pixel's 4 corners and back"
                        % len(points))
        return problems
    if points[0] != points[-1]:
        problems.append("the outline is not closed: %r ... %r" % (points[0], points[-1]))
    for x, y in points:
        if not (0 <= x <= columns and 0 <= y <= rows):
            problems.append("outline point %r lies off the %d x %d image" % ((x, y), columns, rows))
            break
        if x != int(x) or y != int(y):
            problems.append("outline point %r is not a pixel corner" % ((x, y),))
            break
    for a, b in zip(points, points[1:]):
        if a[0] != b[0] and a[1] != b[1]:
            problems.append("outline step %r -> %r does not follow a pixel edge" % (a, b))
            break
    return problems


def measured_value(chk, num, unit, where):
    """The value of NUM item NUM, with its unit checked."""
    mv = num.MeasuredValueSequence[0]
    chk.expect(code(mv.MeasurementUnitsCodeSequence) == unit,
               "%s: unit %s is not UCUM %s" % (where, code(mv.MeasurementUnitsCodeSequence),
                                               unit[0]))
    # FloatingPointValue, where present, holds what DS had no room for.
    return float(mv.FloatingPointValue) if "FloatingPointValue" in mv \
        else float(mv.NumericValue)


def check_algorithm(chk, num, args, where):
    """TID 4019 under a measurement: name, version and the model's digests."""
    if args.algorithm:
        name = one(chk, num, ALGORITHM_NAME, "TEXT", where)
        if name is not None:
            chk.expect(name.TextValue == args.algorithm,
                       "%s: algorithm %r, expected %r" % (where, name.TextValue, args.algorithm))
    if args.algorithm_version:
        ver = one(chk, num, ALGORITHM_VERSION, "TEXT", where)
        if ver is not None:
            chk.expect(ver.TextValue == args.algorithm_version,
                       "%s: algorithm version %r, expected %r"
                       % (where, ver.TextValue, args.algorithm_version))
    params = [p.TextValue for p in children(num, ALGORITHM_PARAMETERS, "TEXT")]
    want = []
    if args.model_sha256:
        want.append("model SHA-256 " + args.model_sha256)
    if args.manifest_sha256:
        want.append("manifest SHA-256 " + args.manifest_sha256)
    if want or args.no_trust:
        chk.expect(params == want, "%s: algorithm parameters %r, expected %r"
                   % (where, params, want))


def check_planar_group(chk, group, volumetric, seg, args, expected):
    """A TID 1410 group: the same finding as the segment's volumetric
    group, a closed outline on the right image, area and long axis."""
    where = "planar group %s" % seg["label"]
    tmpl = group.get("ContentTemplateSequence")
    chk.expect(bool(tmpl) and tmpl[0].get("TemplateIdentifier") == "1410",
               "%s does not name TID 1410" % where)
    for name, vt in ((TRACKING_IDENTIFIER, "TEXT"), (TRACKING_UID, "UIDREF")):
        mine, theirs = one(chk, group, name, vt, where), children(volumetric, name, vt)
        if mine is not None and theirs:
            value = (lambda i: i.TextValue) if vt == "TEXT" else (lambda i: i.UID)
            chk.expect(value(mine) == value(theirs[0]),
                       "%s: %s %r differs from the volumetric group's %r"
                       % (where, name, value(mine), value(theirs[0])))
    finding, theirs = one(chk, group, FINDING, "CODE", where), children(volumetric, FINDING, "CODE")
    if finding is not None and theirs:
        chk.expect(code(finding.ConceptCodeSequence) == code(theirs[0].ConceptCodeSequence),
                   "%s: finding differs from the volumetric group's" % where)

    region = one(chk, group, IMAGE_REGION, "SCOORD", where)
    if region is not None:
        chk.expect(region.GraphicType == "POLYLINE",
                   "%s: graphic type %s is not POLYLINE" % (where, region.GraphicType))
        data = [float(v) for v in region.GraphicData]
        points = list(zip(data[0::2], data[1::2]))
        images = [c for c in region.get("ContentSequence", [])
                  if c.get("RelationshipType") == "SELECTED FROM" and c.get("ValueType") == "IMAGE"]
        chk.expect(len(images) == 1, "%s: the outline is selected from %d images"
                   % (where, len(images)))
        if expected is not None:
            for p in outline_problems(points, expected["rows"], expected["columns"]):
                chk.expect(False, "%s: %s" % (where, p))
            if images:
                ref = images[0].ReferencedSOPSequence[0]
                chk.expect(ref.ReferencedSOPInstanceUID == expected["sop_instance"],
                           "%s: the outline is on %s, expected slice %d's %s"
                           % (where, ref.ReferencedSOPInstanceUID, expected["slice"],
                              expected["sop_instance"]))
                chk.expect(ref.ReferencedSOPClassUID == expected["sop_class"],
                           "%s: referenced SOP class %s" % (where, ref.ReferencedSOPClassUID))
                chk.expect("ReferencedFrameNumber" not in ref,
                           "%s: a frame number for a single-frame image" % where)
            if points and points[0] == points[-1]:
                drawn = polygon_mask(points, expected["rows"], expected["columns"])
                chk.expect(np.array_equal(drawn, expected["region"]),
                           "%s: the outline encloses %d pixels, not the %d of the largest "
                           "piece and its holes (differing: %d)"
                           % (where, drawn.sum(), expected["region"].sum(),
                              (drawn != expected["region"]).sum()))

    for name, unit, key in ((AREA, UCUM_MM2, "area_mm2"), (LONG_AXIS, UCUM_MM, "diameter_mm")):
        num = one(chk, group, name, "NUM", where)
        if num is None:
            continue
        value = measured_value(chk, num, unit, "%s %s" % (where, key))
        if expected is not None:
            chk.expect(math.isclose(value, expected[key], rel_tol=1e-9),
                       "%s: %s %r, expected %r" % (where, key, value, expected[key]))
        check_algorithm(chk, num, args, "%s %s" % (where, key))


def check_meanings(chk, item):
    """Each code the writer picks carries its context group's meaning."""
    for kw in ("ConceptNameCodeSequence", "ConceptCodeSequence", "MeasurementUnitsCodeSequence"):
        for c in item.get(kw, []):
            key = (str(c.CodeValue), str(c.CodingSchemeDesignator))
            if key in MEANINGS:
                chk.expect(c.CodeMeaning == MEANINGS[key], "code %s has meaning %r, not %r"
                           % (key, c.CodeMeaning, MEANINGS[key]))
    for kw in ("ContentSequence", "MeasuredValueSequence"):
        for child in item.get(kw, []):
            check_meanings(chk, child)


def check_trust(chk, ds, args):
    """The intended use, as a Comment in the report's Qualitative Evaluations."""
    comments = []
    for container in children(ds, QUALITATIVE_EVALUATIONS, "CONTAINER"):
        comments += [c.TextValue for c in children(container, COMMENT, "TEXT")]
    if args.intended_use is not None:
        chk.expect(comments == ["Intended use: " + args.intended_use],
                   "intended use comments %r" % comments)
    if args.no_trust:
        chk.expect(not comments, "intended use comments %r, expected none" % comments)


def check_group(chk, group, seg, args):
    label = seg["label"]
    where = "group %s" % label
    tid = one(chk, group, TRACKING_IDENTIFIER, "TEXT", where)
    if tid is not None:
        chk.expect(label in tid.TextValue,
                   "%s: tracking identifier %r lacks the label" % (where, tid.TextValue))
    tuid = one(chk, group, TRACKING_UID, "UIDREF", where)

    ref = one(chk, group, REFERENCED_SEGMENT, "IMAGE", where)
    if ref is not None:
        sop = ref.ReferencedSOPSequence[0]
        chk.expect(sop.ReferencedSOPClassUID == SEGMENTATION_STORAGE,
                   "%s: referenced segment's SOP class %s" % (where, sop.ReferencedSOPClassUID))
        chk.expect(sop.ReferencedSOPInstanceUID == args.seg_uid,
                   "%s: references SEG %s, expected %s"
                   % (where, sop.ReferencedSOPInstanceUID, args.seg_uid))
        numbers = sop.get("ReferencedSegmentNumber")
        numbers = list(numbers) if isinstance(numbers, (list, pydicom.multival.MultiValue)) \
            else [numbers]
        if seg["number"] is not None:
            chk.expect(numbers == [seg["number"]],
                       "%s: segment number %r, expected %d" % (where, numbers, seg["number"]))

    src = one(chk, group, SOURCE_SERIES, "UIDREF", where)
    if src is not None:
        chk.expect(src.UID == args.source_series,
                   "%s: source series %s, expected %s" % (where, src.UID, args.source_series))

    finding = one(chk, group, FINDING, "CODE", where)
    if finding is not None and seg["type"] is not None:
        chk.expect(code(finding.ConceptCodeSequence)[0] == seg["type"],
                   "%s: finding %s, expected %s"
                   % (where, code(finding.ConceptCodeSequence), seg["type"]))

    volume = one(chk, group, VOLUME, "NUM", where)
    if volume is not None:
        mv = volume.MeasuredValueSequence[0]
        chk.expect(code(mv.MeasurementUnitsCodeSequence) == UCUM_ML,
                   "%s: volume unit %s is not UCUM ml"
                   % (where, code(mv.MeasurementUnitsCodeSequence)))
        # FloatingPointValue, where present, holds what DS had no room for.
        value = float(mv.FloatingPointValue) if "FloatingPointValue" in mv \
            else float(mv.NumericValue)
        chk.expect(math.isclose(value, seg["volume"], rel_tol=1e-9, abs_tol=1e-12),
                   "%s: volume %r, expected %r" % (where, value, seg["volume"]))
        check_algorithm(chk, volume, args, where + " volume")
    return tuid.UID if tuid is not None else None


def is_planar(group):
    return bool(children(group, IMAGE_REGION, "SCOORD"))


def check_measurements(chk, root, args, segments, planar):
    """One volumetric group per segment, and beside it one planar group for
    each segment with voxels. PLANAR: {segment number: expectations}, or
    None when the labels are not known (planar groups then checked only
    for their form)."""
    measurements = one(chk, root, IMAGING_MEASUREMENTS, "CONTAINER", "report")
    if measurements is None:
        return
    groups = children(measurements, MEASUREMENT_GROUP, "CONTAINER")
    volumetric = [g for g in groups if not is_planar(g)]
    chk.expect(len(volumetric) == len(segments), "%d volumetric measurement groups for %d "
               "segments" % (len(volumetric), len(segments)))
    by_label = {}
    for group in groups:
        tid = children(group, TRACKING_IDENTIFIER, "TEXT")
        text = tid[0].TextValue if tid else ""
        for seg in segments:
            if text.startswith(seg["label"] + " ") or text == seg["label"]:
                by_label.setdefault(seg["label"], []).append(group)
    tracking_uids = []
    for seg in segments:
        found = by_label.get(seg["label"], [])
        vol = [g for g in found if not is_planar(g)]
        flat = [g for g in found if is_planar(g)]
        if chk.expect(len(vol) == 1, "segment %s: %d volumetric measurement groups"
                      % (seg["label"], len(vol))):
            tracking_uids.append(check_group(chk, vol[0], seg, args))
        expected = None
        if planar is not None and seg["number"] is not None:
            expected = planar.get(seg["number"])
            # A segment without voxels has no cross-section to outline.
            chk.expect(len(flat) == (1 if expected else 0),
                       "segment %s: %d planar groups, expected %d"
                       % (seg["label"], len(flat), 1 if expected else 0))
        else:
            chk.expect(len(flat) <= 1, "segment %s: %d planar groups" % (seg["label"], len(flat)))
        if vol and flat:
            check_planar_group(chk, flat[0], vol[0], seg, args, expected)
    chk.expect(len(set(tracking_uids)) == len(tracking_uids), "tracking UIDs repeat")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check a TID 1500 SR written by ainode.")
    ap.add_argument("sr")
    ap.add_argument("seg_uid")
    ap.add_argument("source_series")
    ap.add_argument("segments", nargs="+", help="NUMBER:LABEL:TYPE_CODE=VOLUME or LABEL=VOLUME")
    ap.add_argument("--source-dir")
    ap.add_argument("--seg-series")
    ap.add_argument("--algorithm")
    ap.add_argument("--algorithm-version")
    ap.add_argument("--series-number", type=int)
    ap.add_argument("--labels", nargs=4, metavar=("RAW", "NX", "NY", "NZ"))
    ap.add_argument("--slices", nargs="+", metavar="FILE")
    ap.add_argument("--model-sha256")
    ap.add_argument("--manifest-sha256")
    ap.add_argument("--intended-use")
    ap.add_argument("--no-trust", action="store_true")
    args = ap.parse_args(argv)
    try:
        segments = [parse_segment(s) for s in args.segments]
    except ValueError as e:
        ap.error(str(e))
    if bool(args.labels) != bool(args.slices):
        ap.error("--labels and --slices go together")
    planar = None
    if args.labels:
        try:
            nx, ny, nz = (int(v) for v in args.labels[1:])
            labels = load_labels(args.labels[0], nx, ny, nz)
        except ValueError as e:
            ap.error(str(e))
        if len(args.slices) != nz:
            ap.error("%d slice files for %d slices" % (len(args.slices), nz))
        planar = planar_expectations(labels, args.slices)

    chk = Checker()
    ds = pydicom.dcmread(args.sr)
    sources = source_files(args.source_dir) if args.source_dir else []
    check_header(chk, ds, args, sources)
    check_evidence(chk, ds, args, sources)
    check_context(chk, ds, args, sources)
    check_measurements(chk, ds, args, segments, planar)
    check_meanings(chk, ds)
    check_trust(chk, ds, args)

    for p in chk.problems:
        sys.stderr.write("verify_sr: %s\n" % p)
    if chk.problems:
        return 1
    print("verify_sr: OK (%d measurement groups)" % len(segments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
