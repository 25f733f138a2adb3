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

Reads the SR with pydicom, walks the content tree and prints every mismatch;
exits 0 when there is none, 1 otherwise (2 on bad usage).
"""

import argparse
import glob
import math
import os
import sys

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
UCUM_ML = ("ml", "UCUM")

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
        if args.algorithm:
            name = one(chk, volume, ALGORITHM_NAME, "TEXT", where + " volume")
            if name is not None:
                chk.expect(name.TextValue == args.algorithm,
                           "%s: algorithm %r, expected %r" % (where, name.TextValue, args.algorithm))
        if args.algorithm_version:
            ver = one(chk, volume, ALGORITHM_VERSION, "TEXT", where + " volume")
            if ver is not None:
                chk.expect(ver.TextValue == args.algorithm_version,
                           "%s: algorithm version %r, expected %r"
                           % (where, ver.TextValue, args.algorithm_version))
    return tuid.UID if tuid is not None else None


def check_measurements(chk, root, args, segments):
    measurements = one(chk, root, IMAGING_MEASUREMENTS, "CONTAINER", "report")
    if measurements is None:
        return
    groups = children(measurements, MEASUREMENT_GROUP, "CONTAINER")
    chk.expect(len(groups) == len(segments),
               "%d measurement groups for %d segments" % (len(groups), len(segments)))
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
        if chk.expect(len(found) == 1, "segment %s: %d measurement groups"
                      % (seg["label"], len(found))):
            tracking_uids.append(check_group(chk, found[0], seg, args))
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
    args = ap.parse_args(argv)
    try:
        segments = [parse_segment(s) for s in args.segments]
    except ValueError as e:
        ap.error(str(e))

    chk = Checker()
    ds = pydicom.dcmread(args.sr)
    sources = source_files(args.source_dir) if args.source_dir else []
    check_header(chk, ds, args, sources)
    check_evidence(chk, ds, args, sources)
    check_context(chk, ds, args, sources)
    check_measurements(chk, ds, args, segments)

    for p in chk.problems:
        sys.stderr.write("verify_sr: %s\n" % p)
    if chk.problems:
        return 1
    print("verify_sr: OK (%d measurement groups)" % len(segments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
