#!/usr/bin/python3
"""Integration tests of the other outputs of image models: regression
(named values with UCUM units -> TID 1501 numeric measurements) and
detection (boxes in model input pixels, mapped back through the letterbox
onto their source image -> TID 1410 planar regions with a closed POLYLINE
SCOORD). The TorchScript models are scripted here with python3-torch; their
outputs are exact functions of the input, so every value and every box is
computed again here from the source pixels (pydicom decodes, numpy applies
the display pipeline, torch resizes) and checked in the job record, the
status and the SR the PACS (DCMTK's storescp) received, which dciodvfy
must find without error.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_image_outputs
"""

import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_image_models import (PYDICOM_FILES, letterboxed,  # noqa: E402
                               make_encoder_and_heads, manifest_text, one_series, radiographs,
                               rendered, run_to_sr)
from test_receiver import NodeTestCase  # noqa: E402
from test_results import dciodvfy_errors  # noqa: E402

import pydicom  # noqa: E402

# The regressor: value 1 is twice the mean of the first input channel,
# value 2 the mean of the last minus 0.25 (negative for dark images).
REGRESSOR_SOURCE = '''
import sys
import torch


class MeanValues(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=(2, 3))
        return torch.stack([2 * m[:, 0], m[:, -1] - 0.25], 1)


torch.jit.script(MeanValues()).save(sys.argv[1])
'''

# A regression head on test_image_models' encoder (each channel's mean):
# the same two values as the regressor, from the features.
HEAD_SOURCE = '''
import sys
import torch


class MeanValuesHead(torch.nn.Module):
    def forward(self, f):
        return torch.stack([2 * f[:, 0], f[:, -1] - 0.25], 1)


torch.jit.script(MeanValuesHead()).save(sys.argv[1])
'''

# The detector: per image two rows (x1, y1, x2, y2, score, class). Row 1
# boxes the input pixels whose first channel is above 0.5 (pixel corners:
# x2 is one past the last column), class 1, score 0.9; without any such
# pixel its score is 0. Row 2 is a class 2 box over the whole input with
# score 0.1, below every score_threshold used here: never reported.
DETECTOR_SOURCE = '''
import sys
import torch


class BrightBox(torch.nn.Module):
    def forward(self, x):
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        mask = x[:, 0] > 0.5
        rows = mask.any(dim=2)
        cols = mask.any(dim=1)
        r = torch.arange(h, dtype=torch.float32).expand(b, h)
        c = torch.arange(w, dtype=torch.float32).expand(b, w)
        far_r = torch.full((b, h), 1e6)
        far_c = torch.full((b, w), 1e6)
        y1 = torch.where(rows, r, far_r).min(dim=1).values
        y2 = torch.where(rows, r, -far_r).max(dim=1).values + 1
        x1 = torch.where(cols, c, far_c).min(dim=1).values
        x2 = torch.where(cols, c, -far_c).max(dim=1).values + 1
        score = rows.any(dim=1).to(torch.float32) * 0.9
        one = torch.ones(b)
        first = torch.stack([x1, y1, x2, y2, score, one], 1)
        second = torch.stack([0 * one, 0 * one, w * one, h * one, 0.1 * one, 2 * one], 1)
        return torch.stack([first, second], 1)


torch.jit.script(BrightBox()).save(sys.argv[1])
'''

# Detectors that break the contract of a detection output, one way each.
BAD_DETECTORS_SOURCE = '''
import sys
import torch


def box(b: int, score: float, cls: float) -> torch.Tensor:
    one = torch.ones(b)
    return torch.stack([one, one, 4 * one, 4 * one, score * one, cls * one], 1)


class FiveColumns(torch.nn.Module):
    def forward(self, x):
        return box(x.shape[0], 0.9, 1.0)[:, None, :5]


class TooManyRows(torch.nn.Module):
    def forward(self, x):
        return box(x.shape[0], 0.9, 1.0)[:, None, :].expand(-1, 5, -1)


class NotFinite(torch.nn.Module):
    def forward(self, x):
        b = box(x.shape[0], 0.9, 1.0)
        b[:, 2] = float("nan")
        return b[:, None, :]


class UnknownClass(torch.nn.Module):
    def forward(self, x):
        return box(x.shape[0], 0.9, 3.0)[:, None, :]


class ScoreAboveOne(torch.nn.Module):
    def forward(self, x):
        return box(x.shape[0], 1.5, 1.0)[:, None, :]


for cls in (FiveColumns, TooManyRows, NotFinite, UnknownClass, ScoreAboveOne):
    torch.jit.script(cls()).save("%s/%s.pt" % (sys.argv[1], cls.__name__))
'''

ALGORITHM = [
    "algorithm:",
    "  name: %s",
    '  version: "2.1"',
    '  family: {value: "123110", scheme: DCM, meaning: Artificial Intelligence}',
]

# The values' concepts and units: a ratio (UCUM "1") and years (UCUM "a").
RATIO = ("Ratio", "RATIO", "Brightness ratio", "1", "no units")
AGE = ("Age", "AGE", "Apparent age", "a", "year")

CLASSES = [("Bright", "BRIGHT", "Bright region"), ("Whole", "WHOLE", "Whole picture")]


def script(workdir, name, source):
    src = os.path.join(workdir, name + ".py")
    with open(src, "w") as f:
        f.write(source)
    out = os.path.join(workdir, name + ".pt")
    subprocess.run(["/usr/bin/python3", src, out], check=True, capture_output=True)
    return out


def input_lines(modality, size, channels, window_=None):
    lines = ["input:", "  modality: %s" % modality, "  kind: image",
             "  size: [%d, %d]" % size, "  channels: %d" % channels, "  batch: 2"]
    if window_:
        lines.append("  window: [%r, %r]" % window_)
    return lines


def regressor_manifest(modality, size, channels, aggregate, encoder=None):
    lines = [ALGORITHM[0], ALGORITHM[1] % "Mean regressor"] + ALGORITHM[2:]
    if encoder:
        lines.append("input: {from: %s, batch: 2}" % encoder)
    else:
        lines += input_lines(modality, size, channels)
    lines += ["output:", "  kind: regression", "  channels: 2", "  aggregate: %s" % aggregate,
              "  values:"]
    for i, (name, code, meaning, unit, unit_meaning) in enumerate((RATIO, AGE)):
        lines.append('    %d: {name: %s, concept: {value: %s, scheme: 99AINODE, meaning: %s}, '
                     'unit: {value: "%s", scheme: UCUM, meaning: %s}}'
                     % (i + 1, name, code, meaning, unit, unit_meaning))
    return "\n".join(lines) + "\n"


def detector_manifest(modality, size, channels, window_=None):
    lines = [ALGORITHM[0], ALGORITHM[1] % "Bright box detector"] + ALGORITHM[2:]
    lines += input_lines(modality, size, channels, window_)
    lines += ["output:", "  kind: detection", "  channels: 2", "  score_threshold: 0.3",
              "  max_boxes: 4", "  classes:"]
    for i, (name, code, meaning) in enumerate(CLASSES):
        lines.append("    %d: {name: %s, finding: {value: %s, scheme: 99AINODE, meaning: %s}}"
                     % (i + 1, name, code, meaning))
    return "\n".join(lines) + "\n"


def regress(x):
    """REGRESSOR_SOURCE's forward for one input (channels x rows x cols)."""
    m = x.mean(axis=(1, 2))
    return np.array([2 * m[0], m[-1] - 0.25])


def mapping(rows, cols, size):
    """The letterbox of a ROWS x COLS picture in SIZE: scale, top, left."""
    scale = min(size[0] / rows, size[1] / cols)
    nr, nc = np.floor(rows * scale + 0.5), np.floor(cols * scale + 0.5)
    return scale, (size[0] - nr) // 2, (size[1] - nc) // 2


def bright_box(picture):
    """The box (x1, y1, x2, y2, pixel corners) of the pixels of the first
    channel above 0.5, or None."""
    ys, xs = np.nonzero(picture[0] > 0.5)
    if len(ys) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def expected_box(frame, size):
    """Where the detector's box of FRAME lands on it: found on the model's
    input, mapped back through the letterbox, clipped to the image."""
    box = bright_box(letterboxed(frame, size))
    if box is None:
        return None
    rows, cols = frame.shape[1:]
    scale, top, left = mapping(rows, cols, size)
    x = np.clip((box[[0, 2]] - left) / scale, 0, cols)
    y = np.clip((box[[1, 3]] - top) / scale, 0, rows)
    return np.array([x[0], y[0], x[1], y[1]])


def measurement_groups(sr):
    """The groups of the SR's Imaging Measurements, each {concept code: [items]}."""
    out = []
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeValue != "126010":
            continue
        for group in container.ContentSequence:
            items = {}
            for it in group.ContentSequence:
                items.setdefault(it.ConceptNameCodeSequence[0].CodeValue, []).append(it)
            out.append(items)
    return out


def algorithm_of(num):
    """Algorithm name, version and parameters of a NUM item (TID 4019)."""
    mods = {}
    for it in num.get("ContentSequence", []):
        mods.setdefault(it.ConceptNameCodeSequence[0].CodeValue, []).append(it.TextValue)
    return mods.get("111001"), mods.get("111003"), mods.get("111002")


class ImageOutputTest(NodeTestCase):
    def run_model(self, files, modality, pt, manifest, model="m"):
        """Sends FILES to a node running PT with MANIFEST; returns its job
        (from the status), its result document and the SR received."""
        mpath = os.path.join(self.workdir, model + ".yaml")
        with open(mpath, "w") as f:
            f.write(manifest)
        job, sr = run_to_sr(self, lambda port: {
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                      "port": port, "retry_initial_seconds": 1}},
            "models": {model: {"file": pt, "manifest": mpath, "threads": 1}},
            "rules": [{"name": "pictures", "match": {"Modality": modality},
                       "run": [model], "send_results_to": ["pacs"]}]}, files)
        with open(job["result"]) as f:
            doc = json.load(f)
        return job, doc, sr

    def frames_of(self, files, channels, window_=None):
        """{(SOP instance UID, frame): rendered frame} of FILES."""
        out = {}
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for k, frame in enumerate(rendered(f, channels, window_)):
                out[(uid, k)] = frame
        return out

    # ---- regression ----

    def check_values(self, files, modality, size, channels, aggregate):
        frames = self.frames_of(files, channels)
        expected = {k: regress(letterboxed(v, size)) for k, v in frames.items()}
        pt = script(self.workdir, "regressor", REGRESSOR_SOURCE)
        job, doc, sr = self.run_model(files, modality, pt,
                                      regressor_manifest(modality, size, channels, aggregate))
        got = {(i["sop_instance_uid"], i["frame"]): i["values"] for i in doc["images"]}
        self.assertEqual(set(got), set(expected))
        # DCMTK and pydicom convert YBR to RGB each with its own rounding.
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], want, atol=2 / 255, err_msg=str(key))
        reduce = np.max if aggregate == "max" else np.mean
        series = reduce(np.array([got[k] for k in sorted(got)]), axis=0)
        np.testing.assert_allclose(series, reduce(list(expected.values()), axis=0), atol=2 / 255)
        for i, (name, _, _, unit, _) in enumerate((RATIO, AGE)):
            key = str(i + 1)
            for record in (doc["values"][key], job["values"][key]):
                self.assertEqual((record["name"], record["unit"]), (name, unit))
                self.assertAlmostEqual(record["value"], series[i], delta=1e-5)
        # One TID 1501 group per value: its name, concept, unit and value,
        # with the model that gave it.
        groups = measurement_groups(sr)
        self.assertEqual(len(groups), 2)
        for g, (name, code, meaning, unit, unit_meaning), want in zip(groups, (RATIO, AGE),
                                                                      series):
            self.assertEqual(g["112039"][0].TextValue, name)
            num = g[code][0]
            self.assertEqual(num.ValueType, "NUM")
            self.assertEqual(num.ConceptNameCodeSequence[0].CodeMeaning, meaning)
            mv = num.MeasuredValueSequence[0]
            u = mv.MeasurementUnitsCodeSequence[0]
            self.assertEqual((u.CodeValue, u.CodingSchemeDesignator, u.CodeMeaning),
                             (unit, "UCUM", unit_meaning))
            self.assertAlmostEqual(float(mv.NumericValue), want, delta=1e-5)
            algo_name, version, parameters = algorithm_of(num)
            self.assertEqual((algo_name, version), (["Mean regressor"], ["2.1"]))
            self.assertEqual(sorted(p.split(" SHA-256 ")[0] for p in parameters),
                             ["manifest", "model"])
        return series

    def test_radiographs_give_their_mean_values_as_measurements(self):
        files = one_series(radiographs(self.workdir), os.path.join(self.workdir, "in"))
        series = self.check_values(files, "DX", (32, 32), 1, "mean")
        # MONOCHROME1 shows the same pixels inverted: one bright, one dark,
        # so the mean is not either image's; value 2 of the dark one is < 0.
        self.assertTrue(0.1 < series[0] < 1.9, series)

    def test_colour_frames_give_their_largest_values(self):
        names = ["SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm"]
        files = one_series([os.path.join(PYDICOM_FILES, f) for f in names],
                           os.path.join(self.workdir, "in"))
        self.check_values(files, "OT", (40, 56), 3, "max")

    def test_a_regression_head_reads_its_encoder_s_features(self):
        names = ["SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm"]
        files = one_series([os.path.join(PYDICOM_FILES, f) for f in names],
                           os.path.join(self.workdir, "in"))
        expected = {k: regress(letterboxed(v, (40, 56)))
                    for k, v in self.frames_of(files, 3).items()}
        encoder = os.path.join(self.workdir, "encoder.yaml")
        head = os.path.join(self.workdir, "head.yaml")
        with open(encoder, "w") as f:
            f.write(manifest_text("OT", (40, 56), 3, batch=3).split("output:")[0] +
                    "output: {kind: embedding, channels: 3}\n")
        with open(head, "w") as f:
            f.write(regressor_manifest("OT", None, 3, "mean", encoder="encoder"))
        models = {
            "encoder": {"file": make_encoder_and_heads(self.workdir)["encoder"],
                        "manifest": encoder, "threads": 1},
            "values": {"file": script(self.workdir, "head", HEAD_SOURCE), "manifest": head,
                       "threads": 1},
        }
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections={
                "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                          "port": pacs.port, "retry_initial_seconds": 1}},
                "models": models,
                "rules": [{"name": "pictures", "match": {"Modality": "OT"},
                           "run": ["encoder", "values"], "send_results_to": ["pacs"]}]},
                stable_seconds=1)
            n.start()
            harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

            def ended():
                st = n.status()
                jobs = st["jobs"]
                done = len(jobs) == 2 and all(j["state"] in ("done", "failed") for j in jobs)
                sent = len(st["outbox"]) == 1 and st["outbox"][0]["state"] == "sent"
                return jobs if done and sent else None
            jobs = harness.wait_until(ended, 120, 0.2, "two jobs and one SR")
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
        self.assertEqual([j["state"] for j in jobs], ["done"] * 2, jobs)
        job = [j for j in jobs if j["model"] == "values"][0]
        with open(job["result"]) as f:
            doc = json.load(f)
        got = {(i["sop_instance_uid"], i["frame"]): i["values"] for i in doc["images"]}
        self.assertEqual(set(got), set(expected))
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], want, atol=2 / 255, err_msg=str(key))
        series = np.mean([got[k] for k in sorted(got)], axis=0)
        for i, name in enumerate(("Ratio", "Age")):
            self.assertEqual(job["values"][str(i + 1)]["name"], name)
            self.assertAlmostEqual(job["values"][str(i + 1)]["value"], series[i], delta=1e-5)
        self.assertEqual(len(received), 1)
        self.assertEqual(dciodvfy_errors(received[0]), [])
        groups = measurement_groups(pydicom.dcmread(received[0]))
        self.assertEqual([g["112039"][0].TextValue for g in groups], ["Ratio", "Age"])
        for g, code, want in zip(groups, ("RATIO", "AGE"), series):
            self.assertAlmostEqual(float(g[code][0].MeasuredValueSequence[0].NumericValue),
                                   want, delta=1e-5)

    # ---- detection ----

    def detect(self, files, modality, size, channels, window_=None):
        frames = self.frames_of(files, channels, window_)
        pt = script(self.workdir, "detector", DETECTOR_SOURCE)
        job, doc, sr = self.run_model(files, modality, pt,
                                      detector_manifest(modality, size, channels, window_))
        expected = {}
        for key, frame in frames.items():
            box = expected_box(frame, size)
            if box is not None:
                expected[key] = (box, frame)
        # The boxes of the record: one per image with bright pixels, class
        # 1, where the letterbox mapping puts it within one model pixel.
        boxes = {(b["sop_instance_uid"], b["frame"]): b for b in doc["boxes"]}
        self.assertEqual(len(boxes), len(doc["boxes"]))
        self.assertEqual(set(boxes), set(expected))
        for key, (want, frame) in expected.items():
            b = boxes[key]
            self.assertEqual((b["class"], b["name"]), (1, "Bright"))
            self.assertAlmostEqual(b["score"], 0.9, delta=1e-6)
            scale = mapping(frame.shape[1], frame.shape[2], size)[0]
            np.testing.assert_allclose(b["box"], want, atol=1 / scale + 1e-3, err_msg=str(key))
            # And on the source itself: within the bright pixels' own box
            # (resizing may lose a thin bright edge, never add one far off).
            own = bright_box(frame)
            tol = 1 / scale + 1
            self.assertTrue(b["box"][0] >= own[0] - tol and b["box"][1] >= own[1] - tol and
                            b["box"][2] <= own[2] + tol and b["box"][3] <= own[3] + tol,
                            (b["box"], own))
        summary = job["detections"]
        self.assertEqual((summary["1"]["name"], summary["1"]["boxes"]), ("Bright", len(expected)))
        self.assertEqual((summary["2"]["name"], summary["2"]["boxes"]), ("Whole", 0))

        # The SR: a TID 1501 group per class (present with a box, its best
        # score the certainty), then a TID 1410 group per box.
        groups = measurement_groups(sr)
        self.assertEqual(len(groups), 2 + len(expected))
        for g, (name, code, _), present in zip(groups, CLASSES, (bool(expected), False)):
            self.assertEqual(g["112039"][0].TextValue, name)
            self.assertEqual(g["121071"][0].ConceptCodeSequence[0].CodeValue, code)
            certainty = float(g["111012"][0].MeasuredValueSequence[0].NumericValue)
            self.assertAlmostEqual(certainty, 90.0 if present else 0.0, delta=1e-3)
            evaluation = g[code][0].ConceptCodeSequence[0].CodeValue
            self.assertEqual(evaluation, "52101004" if present else "2667000")
        sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID):
               pydicom.dcmread(f, stop_before_pixels=True) for f in files}
        seen = set()
        for i, g in enumerate(groups[2:]):
            self.assertEqual(g["112039"][0].TextValue, "Bright %d" % (i + 1))
            self.assertEqual(g["121071"][0].ConceptCodeSequence[0].CodeValue, "BRIGHT")
            region = g["111030"][0]
            self.assertEqual((region.ValueType, region.GraphicType), ("SCOORD", "POLYLINE"))
            image = region.ContentSequence[0]
            self.assertEqual(image.RelationshipType, "SELECTED FROM")
            ref = image.ReferencedSOPSequence[0]
            uid = str(ref.ReferencedSOPInstanceUID)
            ds = sop[uid]
            # Secondary Capture is a single-frame class (dciodvfy refuses a
            # frame number there): its frames are told apart by their boxes.
            self.assertNotIn("ReferencedFrameNumber", ref)
            graphic = [float(v) for v in region.GraphicData]
            matches = []
            for key in boxes:
                x1, y1, x2, y2 = boxes[key]["box"]
                corners = [x1, y1, x2, y1, x2, y2, x1, y2, x1, y1]
                if key[0] == uid and np.allclose(graphic, corners, atol=1e-4):
                    matches.append(key)
            self.assertEqual(len(matches), 1, (graphic, boxes))
            key = matches[0]
            seen.add(key)
            x1, y1, x2, y2 = boxes[key]["box"]
            certainty = g["111012"][0]
            self.assertAlmostEqual(float(certainty.MeasuredValueSequence[0].NumericValue), 90.0,
                                   delta=1e-3)
            self.assertEqual(algorithm_of(certainty)[:2], (["Bright box detector"], ["2.1"]))
            areas = [it for items in g.values() for it in items
                     if it.ValueType == "NUM" and it.ConceptNameCodeSequence[0].CodeMeaning ==
                     "Area"]
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            if spacing:
                mv = areas[0].MeasuredValueSequence[0]
                self.assertEqual(mv.MeasurementUnitsCodeSequence[0].CodeValue, "mm2")
                want = (x2 - x1) * float(spacing[1]) * (y2 - y1) * float(spacing[0])
                self.assertAlmostEqual(float(mv.NumericValue), want, delta=want * 1e-5)
            else:
                # No pixel spacing: no standard unit for pixels, no area.
                self.assertEqual(areas, [])
        self.assertEqual(seen, set(expected))
        return expected

    def test_boxes_on_radiographs_are_mapped_back_with_their_area(self):
        files = one_series(radiographs(self.workdir), os.path.join(self.workdir, "in"))
        expected = self.detect(files, "DX", (32, 32), 1)
        self.assertEqual(len(expected), 2)
        self.assertTrue(all("PixelSpacing" in pydicom.dcmread(f) for f in files))

    def test_boxes_on_colour_frames_reference_their_frame(self):
        names = ["SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm"]
        files = one_series([os.path.join(PYDICOM_FILES, f) for f in names],
                           os.path.join(self.workdir, "in"))
        expected = self.detect(files, "OT", (40, 56), 3)
        # Both frames of the RLE file have a box, each referenced by number.
        self.assertGreaterEqual(len(expected), 2)

    def test_a_ct_image_gives_its_box_with_an_area(self):
        files = one_series([os.path.join(PYDICOM_FILES, "CT_small.dcm")],
                           os.path.join(self.workdir, "in"))
        # It has no window of its own: the manifest's shows bone as bright.
        self.assertEqual(len(self.detect(files, "CT", (48, 40), 1, window_=(200.0, 600.0))), 1)

    def test_an_mr_image_gives_its_box(self):
        files = one_series([os.path.join(PYDICOM_FILES, "MR_small.dcm")],
                           os.path.join(self.workdir, "in"))
        self.assertEqual(len(self.detect(files, "MR", (40, 48), 1)), 1)

    def test_a_detection_without_boxes_reports_each_class_absent(self):
        # A window far above every pixel renders the picture black.
        files = one_series(radiographs(self.workdir)[:1], os.path.join(self.workdir, "in"))
        expected = self.detect(files, "DX", (32, 32), 1, window_=(100000.0, 10.0))
        self.assertEqual(expected, {})

    def test_a_detector_output_that_is_not_boxes_fails_its_job_with_the_reason(self):
        files = one_series(radiographs(self.workdir)[:1], os.path.join(self.workdir, "in"))
        src = os.path.join(self.workdir, "bad_detectors.py")
        with open(src, "w") as f:
            f.write(BAD_DETECTORS_SOURCE)
        subprocess.run(["/usr/bin/python3", src, self.workdir], check=True,
                       capture_output=True)
        reasons = {
            "FiveColumns": "the model gave an output of shape [1, 1, 5]; the manifest expects "
                           "[1, at most 4, 6] (images, output.max_boxes, box)",
            "TooManyRows": "the model gave an output of shape [1, 5, 6]; the manifest expects "
                           "[1, at most 4, 6] (images, output.max_boxes, box)",
            "NotFinite": "box 1 of image 1 is not finite",
            "UnknownClass": "box 1 of image 1 has class 3 and score 0.9; classes are 1..2, "
                            "scores 0..1",
            "ScoreAboveOne": "box 1 of image 1 has class 1 and score 1.5; classes are 1..2, "
                             "scores 0..1",
        }
        manifest = os.path.join(self.workdir, "detector.yaml")
        with open(manifest, "w") as f:
            f.write(detector_manifest("DX", (32, 32), 1))
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections={
                "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                          "port": pacs.port}},
                "models": {name: {"file": os.path.join(self.workdir, name + ".pt"),
                                  "manifest": manifest, "threads": 1} for name in reasons},
                "rules": [{"name": "pictures", "match": {"Modality": "DX"},
                           "run": sorted(reasons), "send_results_to": ["pacs"]}]},
                stable_seconds=1)
            n.start()
            harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

            def ended():
                jobs = n.status()["jobs"]
                return jobs if len(jobs) == len(reasons) and all(
                    j["state"] in ("done", "failed") for j in jobs) else None
            jobs = harness.wait_until(ended, 120, 0.2, "every detector's job to end")
            outbox = n.status()["outbox"]
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
        for j in jobs:
            self.assertEqual(j["state"], "failed", j)
            self.assertIn(reasons[j["model"]], j["error"], j)
        # Nothing half-made goes out.
        self.assertEqual(outbox, [])
        self.assertEqual(received, [])


if __name__ == "__main__":
    import unittest
    unittest.main()
