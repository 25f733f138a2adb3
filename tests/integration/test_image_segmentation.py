#!/usr/bin/python3
"""Integration tests of segmentation by image models (input.kind image,
output.kind segmentation): 2-D images without a Frame of Reference
(projection radiographs, multi-frame secondary captures), and a CT image
with one, are rendered,
letterboxed, run through a TorchScript segmenter made here with
python3-torch, and the labels mapped back onto each source image come to
DCMTK's storescp (the PACS) as a SEG and a TID 1500 SR, both valid for
dciodvfy.

The segmenter is an exact function of its input x (images x channels x
rows x cols, model pixels (y, x)): "bright" where x[:, 0] > 0.5, "box"
where it is not and the pixel lies in the model-space box rows
[H/4, H/2) x columns [W/8, W/2). Every expected label on the source grid
is computed again here, independently of the node: numpy renders the
source (PS3.3 C.11 window, MONOCHROME1 inverted), torch letterboxes it
(test_image_models.letterboxed), and each source pixel (r, c) takes the
model pixel holding its centre, (top + floor((r + 0.5) nr / rows),
left + floor((c + 0.5) nc / cols)), nr x nc the picture's size in the
model. The radiographs' letterbox is exact (scale 1, a band above and
below); the others shrink the image (pixels averaged), where a model pixel
within 1e-4 of the threshold could fall either way in float arithmetic:
only such pixels are left out of the comparison, and there are at most 8.
A job whose images differ in size fails, naming both sizes.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_image_segmentation
"""

import json
import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_image_models import letterboxed, one_series, radiographs, rendered  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from test_results import dciodvfy_errors  # noqa: E402

import pydicom  # noqa: E402

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
MF_GREY_SC = "1.2.840.10008.5.1.4.1.1.7.3"   # Multi-frame Grayscale Word SC

# THRESHOLD: two channels, label N where channel N - 1 is at least the
# manifest's threshold (0.5). ARGMAX: channel 0 the background at 0.5,
# channels 1 and 2 the labels at 1 where they hold.
SEGMENTER_SOURCE = '''
import sys
import torch


class BrightAndBox(torch.nn.Module):
    def __init__(self, argmax: bool):
        super().__init__()
        self.argmax = argmax

    def forward(self, x):
        v = x[:, 0]
        h, w = v.shape[1], v.shape[2]
        r = torch.arange(h).view(1, h, 1).expand(v.shape)
        c = torch.arange(w).view(1, 1, w).expand(v.shape)
        box = (r >= h // 4) & (r < h // 2) & (c >= w // 8) & (c < w // 2)
        bright = v > 0.5
        one = bright.to(torch.float32)
        two = (box & ~bright).to(torch.float32) * 0.8
        if self.argmax:
            return torch.stack([torch.full_like(v, 0.5), one, two], 1)
        return torch.stack([one, two], 1)


torch.jit.script(BrightAndBox(sys.argv[2] == "argmax")).save(sys.argv[1])
'''

LABELS = [("Bright", "BRIGHT", "Bright region", [255, 0, 0]),
          ("Box", "BOX", "Boxed dark region", [0, 0, 255])]


def make_segmenter(workdir, decision):
    src = os.path.join(workdir, "segmenter.py")
    with open(src, "w") as f:
        f.write(SEGMENTER_SOURCE)
    out = os.path.join(workdir, "segmenter_%s.pt" % decision)
    subprocess.run(["/usr/bin/python3", src, out, decision], check=True, capture_output=True)
    return out


def manifest(modality, size, decision, window_=None):
    lines = [
        "algorithm:",
        "  name: Bright and box segmenter",
        '  version: "3.0"',
        '  family: {value: "123110", scheme: DCM, meaning: Artificial Intelligence}',
        "input:",
        "  modality: %s" % modality,
        "  kind: image",
        "  size: [%d, %d]" % size,
        "  channels: 1",
        "  batch: 2",
    ]
    if window_:
        lines.append("  window: [%r, %r]" % window_)
    lines += ["output:", "  kind: segmentation",
              "  channels: %d" % (3 if decision == "argmax" else 2),
              "  decision: %s" % decision]
    if decision == "threshold":
        lines.append("  threshold: 0.5")
    lines += ["  series_description: Bright and box", "  labels:"]
    for i, (name, code, meaning, color) in enumerate(LABELS):
        lines.append('    %d: {name: %s, category: {value: "49755003", scheme: SCT, '
                     'meaning: Morphologically Altered Structure}, type: {value: %s, '
                     'scheme: 99AINODE, meaning: %s}, color: %s}'
                     % (i + 1, name, code, meaning, json.dumps(color)))
    return "\n".join(lines) + "\n"


def model_labels(picture):
    """SEGMENTER_SOURCE's labels for one model input (channels x H x W),
    and a mask of the model pixels within 1e-4 of its threshold."""
    v = picture[0]
    h, w = v.shape
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    box = (r >= h // 4) & (r < h // 2) & (c >= w // 8) & (c < w // 2)
    bright = v > 0.5
    labels = np.where(bright, 1, np.where(box, 2, 0)).astype(np.uint8)
    return labels, np.abs(v - 0.5) < 1e-4


def expected_labels(frame, size):
    """The labels of FRAME (channels x rows x cols, rendered) on its own
    grid: decided on the letterboxed input, each source pixel taking the
    model pixel that holds its centre. Also the source pixels whose model
    pixel is within 1e-4 of the threshold."""
    rows, cols = frame.shape[1:]
    scale = min(size[0] / rows, size[1] / cols)
    nr, nc = math.floor(rows * scale + 0.5), math.floor(cols * scale + 0.5)
    top, left = (size[0] - nr) // 2, (size[1] - nc) // 2
    labels, near = model_labels(letterboxed(frame, size))
    y = top + np.floor((np.arange(rows) + 0.5) * nr / rows).astype(int)
    x = left + np.floor((np.arange(cols) + 0.5) * nc / cols).astype(int)
    return labels[np.ix_(y, x)], near[np.ix_(y, x)]


def without_frame_of_reference(path):
    """PATH rewritten without Frame of Reference (a projection image has
    none); returns PATH."""
    ds = pydicom.dcmread(path)
    for key in ("FrameOfReferenceUID", "PositionReferenceIndicator"):
        if key in ds:
            delattr(ds, key)
    ds.save_as(path)
    return path


def multiframe_sc(workdir):
    """A Multi-frame Grayscale Word Secondary Capture of two frames (a
    radiograph and its mirror image), with no Frame of Reference and no
    Pixel Spacing."""
    ds = pydicom.dcmread(radiographs(workdir)[0])
    a = ds.pixel_array
    frames = np.stack([a, a[:, ::-1]])
    for key in ("FrameOfReferenceUID", "PositionReferenceIndicator", "PixelSpacing",
                "ImagerPixelSpacing"):
        if key in ds:
            delattr(ds, key)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MF_GREY_SC
    ds.Modality = "OT"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = 2
    ds.FrameTime = 100
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.PixelData = np.ascontiguousarray(frames).astype(np.uint16).tobytes()
    p = os.path.join(workdir, "mf.dcm")
    ds.save_as(p)
    return p


def code(item):
    return (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)


def planar_groups(sr):
    """The measurement groups of the SR's Imaging Measurements."""
    out = []
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeValue == "126010":
            out.extend(container.get("ContentSequence", []))
    return out


def all_items(ds):
    for it in ds.get("ContentSequence", []):
        yield it
        yield from all_items(it)


class ImageSegmentationTest(NodeTestCase):
    def node_sections(self, modality, decision, size, window_, port):
        mpath = os.path.join(self.workdir, "segmenter.yaml")
        with open(mpath, "w") as f:
            f.write(manifest(modality, size, decision, window_))
        return {
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                      "port": port, "retry_initial_seconds": 1}},
            "models": {"seg": {"file": make_segmenter(self.workdir, decision),
                               "manifest": mpath, "threads": 1}},
            "rules": [{"name": "pictures", "match": {"Modality": modality},
                       "run": ["seg"], "send_results_to": ["pacs"]}],
        }

    def run_job(self, files, modality, decision, size, window_=None):
        """Sends FILES to a node running the segmenter; returns its job (from
        the status), the outbox items and the files the PACS received."""
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections=self.node_sections(modality, decision, size, window_,
                                                      pacs.port), stable_seconds=1)
            n.start()
            harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

            def ended():
                st = n.status()
                jobs = [j for j in st["jobs"] if j["state"] in ("done", "failed")]
                items = st["outbox"]
                if jobs and jobs[0]["state"] == "failed":
                    return jobs, items
                return (jobs, items) if jobs and len(items) == 2 and all(
                    i["state"] == "sent" for i in items) else None
            jobs, items = harness.wait_until(ended, 120, 0.2, "the SEG and the SR to be sent")
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
            # `ainode infer` runs the same pipeline in the foreground.
            labels = os.path.join(self.workdir, "labels.raw")
            r = n.cli("infer", "-c", n.config_path, "-m", "seg", "--labels", labels, *files)
            self.infer = (r, labels)
        self.assertEqual(len(jobs), 1, jobs)
        return jobs[0], items, received

    def segment(self, files, modality, decision, size, window_=None):
        """Runs the segmenter on FILES and checks the SEG and the SR against
        the labels computed here; returns the expected labels per (SOP
        Instance UID, frame) and the SEG and SR datasets."""
        headers = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID):
                   pydicom.dcmread(f, stop_before_pixels=True) for f in files}
        expected, near = {}, {}
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for k, frame in enumerate(rendered(f, 1, window_)):
                expected[(uid, k)], near[(uid, k)] = expected_labels(frame, size)
        job, items, received = self.run_job(files, modality, decision, size, window_)
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(sorted(i["kind"] for i in items), ["seg", "sr"])
        self.assertEqual(len(received), 2)
        for p in received:
            self.assertEqual(dciodvfy_errors(p), [], p)
        by_class = {str(pydicom.dcmread(p).SOPClassUID): pydicom.dcmread(p) for p in received}
        seg, sr = by_class[SEG_CLASS], by_class[SR_CLASS]
        n_near = sum(int(m.sum()) for m in near.values())
        self.assertLessEqual(n_near, 8, "too many pixels at the threshold to compare")

        # ---- the result document and the status: pixels and areas ----
        with open(job["result"]) as f:
            doc = json.load(f)
        self.assertEqual(sorted((s["sop_instance_uid"], s["frame"]) for s in doc["slices"]),
                         sorted(expected))
        for number, (name, _, _, _) in enumerate(LABELS, 1):
            count = sum(int((v == number).sum()) for v in expected.values())
            for record in (doc["labels"][str(number)], job["labels"][str(number)]):
                self.assertEqual(record["name"], name)
                self.assertNotIn("volume_ml", record)
                self.assertAlmostEqual(record["pixels"], count,
                                       delta=n_near)
                spacings = {k: headers[k[0]].get("PixelSpacing") for k in expected}
                if all(spacings[k] for k in expected if (expected[k] == number).any()):
                    want = sum(int((v == number).sum()) * float(spacings[k][0]) *
                               float(spacings[k][1]) for k, v in expected.items())
                    self.assertAlmostEqual(record["area_mm2"], want,
                                           delta=1e-6 * want + n_near * 1.0)
                else:
                    self.assertIsNone(record["area_mm2"])

        # ---- `ainode infer`: the same labels, image by image in file-name
        # order, and the same summary ----
        r, labels_path = self.infer
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        rows, cols = next(iter(expected.values())).shape
        self.assertEqual((out["grid"]["nx"], out["grid"]["ny"], out["grid"]["nz"]),
                         (cols, rows, len(expected)))
        self.assertEqual(out["labels"], job["labels"])
        order = [(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID), k)
                 for f in sorted(files) for k in range(int(pydicom.dcmread(
                     f, stop_before_pixels=True).get("NumberOfFrames", 1)))]
        got = np.fromfile(labels_path, dtype=np.uint8).reshape(len(order), rows, cols)
        for i, key in enumerate(order):
            ok = ~near[key]
            np.testing.assert_array_equal(got[i][ok], expected[key][ok], err_msg=str(key))

        # ---- the SEG: a Frame of Reference and plane groups only where the
        # sources have them; frames on their sources ----
        self.assertEqual(seg.SeriesDescription, "Bright and box")
        spatial = all("FrameOfReferenceUID" in h and "ImagePositionPatient" in h
                      for h in headers.values())
        self.assertEqual((seg.Rows, seg.Columns), next(iter(expected.values())).shape)
        shared = seg.SharedFunctionalGroupsSequence[0]
        pointers = [str(pydicom.tag.Tag("ReferencedSegmentNumber"))]
        if spatial:
            first = next(iter(headers.values()))
            self.assertEqual(seg.FrameOfReferenceUID, first.FrameOfReferenceUID)
            self.assertEqual([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                             [float(v) for v in first.PixelSpacing])
            self.assertEqual(
                [float(v) for v in
                 shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                [float(v) for v in first.ImageOrientationPatient])
            pointers.append(str(pydicom.tag.Tag("ImagePositionPatient")))
        else:
            self.assertNotIn("FrameOfReferenceUID", seg)
            for key in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
                self.assertNotIn(key, shared)
        self.assertEqual([str(d.DimensionIndexPointer) for d in seg.DimensionIndexSequence],
                         pointers)
        self.assertEqual(len(seg.SegmentSequence), len(LABELS))
        for number, (s, (name, value, meaning, _)) in enumerate(
                zip(seg.SegmentSequence, LABELS), 1):
            self.assertEqual((s.SegmentNumber, s.SegmentLabel), (number, name))
            self.assertEqual(code(s.SegmentedPropertyTypeCodeSequence[0]),
                             (value, "99AINODE", meaning))
            self.assertEqual(s.SegmentedPropertyCategoryCodeSequence[0].CodeValue, "49755003")
            self.assertEqual(s.SegmentAlgorithmName, "Bright and box segmenter")
        pixels = seg.pixel_array.reshape(len(seg.PerFrameFunctionalGroupsSequence),
                                         seg.Rows, seg.Columns)
        seen = set()
        for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
            ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
            uid = str(ref.ReferencedSOPInstanceUID)
            if spatial:
                self.assertEqual(
                    [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                    [float(v) for v in headers[uid].ImagePositionPatient])
            else:
                self.assertNotIn("PlanePositionSequence", fg)
            self.assertEqual(str(ref.ReferencedSOPClassUID), str(headers[uid].SOPClassUID))
            if "NumberOfFrames" in headers[uid] and \
                    str(headers[uid].SOPClassUID) == MF_GREY_SC:
                frame = int(ref.ReferencedFrameNumber) - 1
            else:
                self.assertNotIn("ReferencedFrameNumber", ref)
                frame = 0
            want = expected[(uid, frame)] == number
            ok = ~near[(uid, frame)]
            np.testing.assert_array_equal(pixels[i][ok], want[ok].astype(np.uint8),
                                          err_msg="frame %d: %s %d" % (i + 1, uid, frame))
            seen.add((uid, frame, number))
        # Every image and segment with pixels has its frame.
        for (uid, frame), v in expected.items():
            for number in (1, 2):
                if (v == number).any():
                    self.assertIn((uid, frame, number), seen)
        # The Common Instance Reference lists every source, by series.
        refs = {}
        for series in seg.ReferencedSeriesSequence:
            for inst in series.ReferencedInstanceSequence:
                refs[str(inst.ReferencedSOPInstanceUID)] = str(series.SeriesInstanceUID)
        self.assertEqual(refs, {u: str(h.SeriesInstanceUID) for u, h in headers.items()})

        # ---- the SR: a planar group per segment, no volume ----
        for it in all_items(sr):
            for concept in it.get("ConceptNameCodeSequence", []):
                self.assertNotEqual(concept.CodeValue, "118565006", "a volume was reported")
        groups = planar_groups(sr)
        present = [n for n in (1, 2) if any((v == n).any() for v in expected.values())]
        self.assertEqual(len(groups), len(present))
        # A segment without pixels is reported absent (a qualitative
        # evaluation of its finding), and nothing else.
        absent = {it.ConceptNameCodeSequence[0].CodeValue for it in all_items(sr)
                  if it.ValueType == "CODE" and
                  it.ConceptCodeSequence[0].CodeValue == "2667000"}
        self.assertEqual(absent, {LABELS[n - 1][1] for n in (1, 2) if n not in present})
        for g, number in zip(groups, present):
            items = {}
            for it in g.ContentSequence:
                items.setdefault(it.ConceptNameCodeSequence[0].CodeValue, []).append(it)
            self.assertEqual(items["112039"][0].TextValue, "%s %d" % (LABELS[number - 1][0],
                                                                     number))
            self.assertEqual(items["121071"][0].ConceptCodeSequence[0].CodeValue,
                             LABELS[number - 1][1])
            # The outline is on the image where the segment has most pixels.
            counts = {k: int((v == number).sum()) for k, v in expected.items()}
            region = items["111030"][0]
            self.assertEqual((region.ValueType, region.GraphicType), ("SCOORD", "POLYLINE"))
            ref = region.ContentSequence[0].ReferencedSOPSequence[0]
            uid = str(ref.ReferencedSOPInstanceUID)
            frame = int(ref.ReferencedFrameNumber) - 1 if "ReferencedFrameNumber" in ref else 0
            self.assertEqual(counts[(uid, frame)], max(counts.values()))
            pts = np.array([float(v) for v in region.GraphicData]).reshape(-1, 2)
            rows, cols = expected[(uid, frame)].shape
            self.assertTrue((pts[:, 0] >= 0).all() and (pts[:, 0] <= cols).all())
            self.assertTrue((pts[:, 1] >= 0).all() and (pts[:, 1] <= rows).all())
            areas = [it for it in g.ContentSequence if it.ValueType == "NUM" and
                     it.ConceptNameCodeSequence[0].CodeMeaning == "Area"]
            spacing = headers[uid].get("PixelSpacing")
            if spacing:
                mv = areas[0].MeasuredValueSequence[0]
                self.assertEqual(mv.MeasurementUnitsCodeSequence[0].CodeValue, "mm2")
                want = counts[(uid, frame)] * float(spacing[0]) * float(spacing[1])
                self.assertAlmostEqual(float(mv.NumericValue), want, delta=want * 1e-5)
            else:
                self.assertEqual(areas, [])
        return expected, seg, sr

    def test_radiographs_without_frame_of_reference_are_segmented_through_the_letterbox(self):
        # 24 x 64 pictures in a 32 x 64 input: scale 1, 4 rows of band
        # above and below, so the model's box lands 4 rows higher on them.
        files = [without_frame_of_reference(p) for p in
                 one_series(radiographs(self.workdir), os.path.join(self.workdir, "in"))]
        for f in files:
            ds = pydicom.dcmread(f)
            self.assertNotIn("FrameOfReferenceUID", ds)
            self.assertNotIn("ImagePositionPatient", ds)
            self.assertIn("PixelSpacing", ds)
        expected, seg, sr = self.segment(files, "DX", "threshold", (32, 64))
        # MONOCHROME1 shows the same pixels inverted: its bright region is
        # the other's dark one, and both segments occur.
        values = list(expected.values())
        self.assertTrue((values[0] == 1).any() and (values[1] == 1).any())
        self.assertTrue(((values[0] == 1) != (values[1] == 1)).any())
        self.assertTrue(any((v == 2).any() for v in values))

    def test_a_halved_multiframe_image_references_its_frames_by_number(self):
        # 24 x 64 frames in a 12 x 40 input: halved (12 x 32), 4 columns
        # of band on each side; argmax over a background channel.
        files = one_series([multiframe_sc(self.workdir)], os.path.join(self.workdir, "in"))
        ds = pydicom.dcmread(files[0])
        self.assertNotIn("FrameOfReferenceUID", ds)
        self.assertNotIn("PixelSpacing", ds)
        expected, seg, sr = self.segment(files, "OT", "argmax", (12, 40))
        self.assertEqual(len(expected), 2)
        frames = {int(fg.DerivationImageSequence[0].SourceImageSequence[0]
                      .ReferencedFrameNumber) for fg in seg.PerFrameFunctionalGroupsSequence}
        self.assertEqual(frames, {1, 2})

    def test_a_segment_without_pixels_is_reported_absent(self):
        # A window far above every pixel renders the radiograph black:
        # nothing is bright, only the box is labelled.
        files = [without_frame_of_reference(p) for p in
                 one_series(radiographs(self.workdir)[:1], os.path.join(self.workdir, "in"))]
        expected, seg, sr = self.segment(files, "DX", "threshold", (32, 64),
                                         window_=(100000.0, 10.0))
        (labels,) = expected.values()
        self.assertFalse((labels == 1).any())
        self.assertTrue((labels == 2).any())

    def test_a_ct_image_keeps_its_frame_of_reference_and_plane(self):
        # An image with patient geometry: the SEG lies in its Frame of
        # Reference. 128 x 128 in a 48 x 32 input: a quarter (32 x 32),
        # 8 rows of band above and below.
        from test_image_models import PYDICOM_FILES
        files = one_series([os.path.join(PYDICOM_FILES, "CT_small.dcm")],
                           os.path.join(self.workdir, "in"))
        expected, seg, sr = self.segment(files, "CT", "threshold", (48, 32),
                                         window_=(200.0, 600.0))
        (labels,) = expected.values()
        self.assertTrue((labels == 1).any() and (labels == 2).any())

    def test_images_of_different_sizes_fail_the_job_with_their_sizes(self):
        dx = radiographs(self.workdir)[0]
        ds = pydicom.dcmread(dx)
        tall = np.repeat(ds.pixel_array, 2, axis=0)
        ds.Rows = tall.shape[0]
        ds.PixelData = tall.astype(np.uint16).tobytes()
        other = os.path.join(self.workdir, "tall.dcm")
        ds.save_as(other)
        files = one_series([dx, other], os.path.join(self.workdir, "in"))
        job, items, received = self.run_job(files, "DX", "threshold", (32, 64))
        self.assertEqual(job["state"], "failed", job)
        self.assertIn("64 x 48", job["error"])
        self.assertIn("64 x 24", job["error"])
        self.assertEqual((items, received), ([], []))


if __name__ == "__main__":
    import unittest
    unittest.main()
