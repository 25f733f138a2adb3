#!/usr/bin/python3
"""Integration tests of image models (input.kind image, output.kind
classification): 2-D images sent with dcmsend are rendered as displayed,
letterboxed and normalised, run through a TorchScript classifier made here
with python3-torch, and come back to DCMTK's storescp (the PACS) as a
TID 1500 SR of findings, valid for dciodvfy. Every expected probability is
computed again here from the source pixels: pydicom decodes, numpy applies
the display pipeline of PS3.3 C.11 and torch resizes.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_image_models
"""

import json
import math
import os
import subprocess
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from test_results import dciodvfy_errors  # noqa: E402

import pydicom  # noqa: E402
from pydicom.pixel_data_handlers.util import apply_color_lut, convert_color_space  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"

# The classifier: class 1 scores the mean of the first input channel, class
# 2 the mean of the last; exact functions of the input, so that every
# probability can be computed again from the pixels.
MODEL_SOURCE = '''
import sys
import torch


class MeanScores(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=(2, 3))
        return torch.stack([20 * (m[:, 0] - 0.3), 20 * (m[:, -1] - 0.6)], 1)


torch.jit.script(MeanScores()).save(sys.argv[1])
'''


# An encoder and three heads: the encoder gives each channel's mean, and
# each head scores those features its own way.
ENCODER_SOURCE = '''
import sys
import torch


class ChannelMeans(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class FirstFeature(torch.nn.Module):
    def forward(self, f):
        return 20 * (f[:, 0:1] - 0.3)


class FirstTwo(torch.nn.Module):
    def forward(self, f):
        return 10 * f[:, 0:2]


class LastFeature(torch.nn.Module):
    def forward(self, f):
        return 20 * (f[:, 2:3] - 0.6)


for cls, name in ((ChannelMeans, "encoder"), (FirstFeature, "first"), (FirstTwo, "two"),
                  (LastFeature, "last")):
    torch.jit.script(cls()).save("%s/%s.pt" % (sys.argv[1], name))
'''


def scores(x):
    """MODEL_SOURCE's forward for one input (channels x rows x cols)."""
    m = x.mean(axis=(1, 2))
    return np.array([20 * (m[0] - 0.3), 20 * (m[-1] - 0.6)])


def make_model(workdir):
    """The classifier as a TorchScript file, scripted from source here."""
    src = os.path.join(workdir, "mean_scores.py")
    with open(src, "w") as f:
        f.write(MODEL_SOURCE)
    out = os.path.join(workdir, "mean_scores.pt")
    subprocess.run(["/usr/bin/python3", src, out], check=True, capture_output=True)
    return out


def make_encoder_and_heads(workdir):
    """{name: TorchScript file} of the encoder and its three heads."""
    src = os.path.join(workdir, "encoder_heads.py")
    with open(src, "w") as f:
        f.write(ENCODER_SOURCE)
    subprocess.run(["/usr/bin/python3", src, workdir], check=True, capture_output=True)
    return {n: os.path.join(workdir, n + ".pt") for n in ("encoder", "first", "two", "last")}


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def window(x, center, width):
    """PS3.3 C.11.2.1.2.1, the linear VOI function, onto 0..1."""
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5)
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, y))


def rendered(path, channels, manifest_window=None):
    """Every frame of PATH as displayed: frames x channels x rows x cols in 0..1."""
    ds = pydicom.dcmread(path)
    a = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1))
    rows, cols = ds.Rows, ds.Columns
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(a, ds).reshape(frames, rows, cols, 3).astype(np.float64) / 65535
        return rgb.transpose(0, 3, 1, 2)
    if ds.SamplesPerPixel == 3:
        if ds.PhotometricInterpretation.startswith("YBR"):
            a = convert_color_space(a, "YBR_FULL", "RGB")
        rgb = a.reshape(frames, rows, cols, 3).astype(np.float64) / 255
        if channels == 3:
            return rgb.transpose(0, 3, 1, 2)
        return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[:, None]
    v = a.reshape(frames, rows, cols).astype(np.float64)
    v = v * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if manifest_window:
        c, w = manifest_window
    else:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    y = window(v, c, w)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1 - y
    return np.repeat(y[:, None], channels, axis=1)


def letterboxed(x, size, mean=None, std=None):
    """X (channels x rows x cols) resized keeping its aspect ratio, centred
    in SIZE with 0 around it, then normalised: torch does the resizing."""
    import torch
    import torch.nn.functional as F
    ch, rows, cols = x.shape
    scale = min(size[0] / rows, size[1] / cols)
    nr, nc = math.floor(rows * scale + 0.5), math.floor(cols * scale + 0.5)
    small = F.interpolate(torch.from_numpy(x)[None], size=(nr, nc), mode="bilinear",
                          align_corners=False)[0].numpy()
    out = np.zeros((ch, size[0], size[1]))
    top, left = (size[0] - nr) // 2, (size[1] - nc) // 2
    out[:, top:top + nr, left:left + nc] = small
    if mean is not None:
        out = (out - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    return out


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def manifest_text(modality, size, channels, window_=None, mean=None, std=None, batch=2,
                  aggregate="max"):
    lines = [
        "algorithm:",
        "  name: Mean score classifier",
        '  version: "1.0"',
        '  family: {value: "123110", scheme: DCM, meaning: Artificial Intelligence}',
        "  # The test model's own codes.",
        "input:",
        "  modality: %s" % modality,
        "  kind: image",
        "  size: [%d, %d]" % size,
        "  channels: %d" % channels,
        "  batch: %d" % batch,
    ]
    if window_:
        lines.append("  window: [%r, %r]" % window_)
    if mean:
        lines.append("  mean: %s" % json.dumps(mean))
        lines.append("  std: %s" % json.dumps(std))
    lines += [
        "output:",
        "  kind: classification",
        "  channels: 2",
        "  activation: sigmoid",
        "  aggregate: %s" % aggregate,
        "  series_description: Mean score findings",
        "  classes:",
        '    1: {name: Bright, finding: {value: "BRIGHT", scheme: 99AINODE, '
        "meaning: Bright image}, threshold: 0.5}",
        '    2: {name: Dark, finding: {value: "DARK", scheme: 99AINODE, '
        "meaning: Dark image}, threshold: 0.4}",
    ]
    return "\n".join(lines) + "\n"


def one_series(paths, out_dir, modality=None):
    """Copies of PATHS made into one series of one study (new UIDs)."""
    os.makedirs(out_dir, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "IMG-TEST", "Image^Test"
        ds.InstanceNumber = i + 1
        if modality:
            ds.Modality = modality
        dst = os.path.join(out_dir, "%02d.dcm" % i)
        ds.save_as(dst)
        out.append(dst)
    return out


def radiographs(workdir):
    """Two projection radiographs (DX) of a CT phantom series, the same
    picture as MONOCHROME2 and as MONOCHROME1, each with its window."""
    ct = make_ct_series(os.path.join(workdir, "ct"), 24, rows=48, cols=64, pixel_fn=phantom)
    hu = np.stack([pydicom.dcmread(f).pixel_array.astype(np.float64) *
                   float(pydicom.dcmread(f).RescaleSlope) +
                   float(pydicom.dcmread(f).RescaleIntercept) for f in ct])
    # Attenuation summed along the rows: a lateral projection, 24 x 64.
    proj = np.clip(hu + 1000, 0, None).sum(axis=1)
    pixels = np.round(proj / proj.max() * 4000).astype(np.uint16)
    template = pydicom.dcmread(ct[0])
    out = []
    for i, photometric in enumerate(("MONOCHROME2", "MONOCHROME1")):
        ds = template.copy()
        ds.SOPClassUID = DX_CLASS
        ds.file_meta.MediaStorageSOPClassUID = DX_CLASS
        ds.Modality = "DX"
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
                    "SliceLocation", "RescaleSlope", "RescaleIntercept", "RescaleType"):
            if key in ds:
                delattr(ds, key)
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 1000, 1600
        ds.PixelData = pixels.tobytes()
        p = os.path.join(workdir, "dx%d.dcm" % i)
        ds.save_as(p)
        out.append(p)
    return out


CLASS_LINE = ('    %d: {name: %s, finding: {value: "%s", scheme: 99AINODE, meaning: %s}}')


def head_manifest(encoder, classes, activation):
    lines = [
        "algorithm:",
        "  name: Head %s" % classes[0],
        '  version: "1.0"',
        '  family: {value: "123110", scheme: DCM, meaning: Artificial Intelligence}',
        "input: {from: %s, batch: 2}" % encoder,
        "output:",
        "  kind: classification",
        "  channels: %d" % len(classes),
        "  activation: %s" % activation,
        "  classes:",
    ] + [CLASS_LINE % (i + 1, c, c.upper(), c) for i, c in enumerate(classes)]
    return "\n".join(lines) + "\n"


def palette_image(workdir):
    """A palette colour picture (8-bit indices into 16-bit red, green and
    blue tables), made from a grey radiograph's pixels."""
    ds = pydicom.dcmread(radiographs(workdir)[0])
    idx = (ds.pixel_array.astype(np.float64) / 4000 * 255).round().astype(np.uint8)
    ramp = np.arange(256, dtype=np.uint16)
    # Entries that are multiples of 257 show as exactly v / 255 in 8 bits.
    tables = {"Red": ramp * 257, "Green": (255 - ramp) * 257,
              "Blue": ((ramp * 3) % 256).astype(np.uint16) * 257}
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for key in ("WindowCenter", "WindowWidth"):
        delattr(ds, key)
    for i, table in enumerate(tables.values()):
        ds.add_new(0x00281101 + i, "US", [256, 0, 16])     # descriptor: US, not SS
        ds.add_new(0x00281201 + i, "OW", table.astype("<u2").tobytes())
    ds.PixelData = idx.tobytes()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"
    p = os.path.join(workdir, "palette.dcm")
    ds.save_as(p)
    return p


US_MULTIFRAME_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
NM_CLASS = "1.2.840.10008.5.1.4.1.1.20"


def ultrasound(workdir):
    """A two-frame colour ultrasound cine (RLE), made from pydicom's RGB
    secondary capture: Debian's pydicom ships no US file of its own."""
    ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, "SC_rgb_rle_2frame.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME_CLASS
    ds.Modality = "US"
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 33.3
    p = os.path.join(workdir, "us.dcm")
    ds.save_as(p)
    return p


def nuclear_medicine(workdir):
    """A three-frame NM image of signed 16-bit counts with its window,
    made from pydicom's CT (Debian's pydicom ships no NM file)."""
    ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, "CT_small.dcm"))
    base = ds.pixel_array.astype(np.int32)
    frames = np.stack([base // 4, base // 2 - 300, base]).clip(-32768, 32767).astype(np.int16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = NM_CLASS
    ds.Modality = "NM"
    for key in ("RescaleSlope", "RescaleIntercept", "RescaleType", "ImagePositionPatient",
                "ImageOrientationPatient", "SliceLocation"):
        if key in ds:
            delattr(ds, key)
    ds.NumberOfFrames = 3
    ds.FrameIncrementPointer = 0x00540080  # Slice Vector
    ds.SliceVector = [1, 2, 3]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.WindowCenter, ds.WindowWidth = 300, 900
    ds.PixelData = frames.tobytes()
    p = os.path.join(workdir, "nm.dcm")
    ds.save_as(p)
    return p


def run_to_sr(case, sections_for, files):
    """Starts CASE's node with SECTIONS_FOR(PACS port), sends FILES with
    dcmsend (each file in its own transfer syntax: RLE stays RLE), waits
    for its job to end and its SR to reach DCMTK's storescp; returns the
    job, after checking it is done, sent one SR alone (no SEG) and that
    the SR passes dciodvfy, and the SR the PACS received."""
    with harness.StoreSCP(os.path.join(case.workdir, "pacs")) as pacs:
        n = case.node(sections=sections_for(pacs.port), stable_seconds=1)
        n.start()
        harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

        def sent():
            st = n.status()
            jobs = [j for j in st["jobs"] if j["state"] in ("done", "failed")]
            items = st["outbox"]
            failed = [j for j in jobs if j["state"] == "failed"]
            return (jobs, items) if failed or (jobs and items and all(
                i["state"] == "sent" for i in items)) else None
        jobs, items = harness.wait_until(sent, 120, 0.2, "the SR to be sent")
        case.assertEqual(n.stop(), 0)
        received = harness.list_files(pacs.out_dir)
    case.assertEqual(len(jobs), 1, jobs)
    job = jobs[0]
    case.assertEqual(job["state"], "done", job)
    case.assertEqual([i["kind"] for i in items], ["sr"])
    case.assertEqual(len(received), 1)
    case.assertEqual(dciodvfy_errors(received[0]), [])
    sr = pydicom.dcmread(received[0])
    case.assertEqual(str(sr.SOPClassUID), SR_CLASS)
    return job, sr


class ImageModelTest(NodeTestCase):
    def sections_for(self, modality, manifest):
        """The config sections of a node running the classifier on MODALITY
        and sending its results to the PACS, as a function of its port."""
        mpath = os.path.join(self.workdir, "classifier.yaml")
        with open(mpath, "w") as f:
            f.write(manifest)
        model = make_model(self.workdir)
        return lambda port: {
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                      "port": port, "retry_initial_seconds": 1}},
            "models": {"classifier": {"file": model, "manifest": mpath, "threads": 1}},
            "rules": [{"name": "pictures", "match": {"Modality": modality},
                       "run": ["classifier"], "send_results_to": ["pacs"]}],
        }

    def classify(self, files, modality, manifest, expected_images):
        """Sends FILES to a node running the classifier; returns its job, its
        result document and the SR the PACS received, after checking the
        per-image probabilities against EXPECTED_IMAGES."""
        job, sr = run_to_sr(self, self.sections_for(modality, manifest), files)
        with open(job["result"]) as f:
            doc = json.load(f)
        got = {(i["sop_instance_uid"], i["frame"]): i["probabilities"] for i in doc["images"]}
        self.assertEqual(set(got), set(expected_images))
        for key, want in expected_images.items():
            np.testing.assert_allclose(got[key], want, atol=2e-3, err_msg=str(key))
        return job, doc, sr

    def findings_of(self, sr):
        """{tracking id: (finding code, certainty %, present code)} of the SR."""
        out = {}
        for container in sr.ContentSequence:
            if container.ConceptNameCodeSequence[0].CodeValue != "126010":  # Imaging Measurements
                continue
            for group in container.ContentSequence:
                items = {}
                for it in group.ContentSequence:
                    name = it.ConceptNameCodeSequence[0]
                    items.setdefault(name.CodeValue, []).append(it)
                tracking = items["112039"][0].TextValue
                finding = items["121071"][0].ConceptCodeSequence[0].CodeValue
                certainty = items["111012"][0].MeasuredValueSequence[0]
                unit = certainty.MeasurementUnitsCodeSequence[0].CodeValue
                value = float(certainty.NumericValue)
                # The qualitative evaluation's concept is the finding itself.
                presence = items[finding][0].ConceptCodeSequence[0]
                out[tracking] = (finding, unit, value, presence.CodeValue,
                                 presence.CodeMeaning)
        return out

    def check_findings(self, sr, probabilities, thresholds=(0.5, 0.4)):
        findings = self.findings_of(sr)
        self.assertEqual(set(findings), {"Bright", "Dark"})
        for name, code, p, t in zip(("Bright", "Dark"), ("BRIGHT", "DARK"), probabilities,
                                    thresholds):
            finding, unit, value, presence, meaning = findings[name]
            self.assertEqual((finding, unit), (code, "%"))
            self.assertAlmostEqual(value, 100 * p, delta=0.2)
            want = ("52101004", "Present") if p >= t else ("2667000", "Absent")
            self.assertEqual((presence, meaning), want, (name, p))

    def test_colour_images_and_frames_are_classified_into_findings(self):
        # RGB (RLE, two frames), YBR_FULL_422 and a 3 x 3 RGB picture, as
        # one series: four images, letterboxed into 40 x 56.
        names = ["SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "SC_rgb_small_odd.dcm"]
        files = one_series([os.path.join(PYDICOM_FILES, f) for f in names],
                           os.path.join(self.workdir, "in"))
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        expected = {}
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for k, frame in enumerate(rendered(f, 3)):
                expected[(uid, k)] = sigmoid(scores(letterboxed(frame, (40, 56), mean, std)))
        self.assertEqual(len(expected), 4)
        manifest = manifest_text("OT", (40, 56), 3, mean=mean, std=std, batch=3)
        job, doc, sr = self.classify(files, "OT", manifest, expected)
        series = np.max(list(expected.values()), axis=0)
        for c, p in zip(("1", "2"), series):
            self.assertAlmostEqual(doc["findings"][c]["probability"], p, delta=2e-3)
            self.assertEqual(job["findings"][c]["present"], bool(p >= (0.5 if c == "1" else 0.4)))
        self.check_findings(sr, series)
        # The images evaluated are the SR's evidence and its image library.
        evidence = {str(i.ReferencedSOPInstanceUID)
                    for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
        self.assertEqual(evidence, {u for u, _ in expected})

    def test_ultrasound_cine_frames_are_classified_in_colour(self):
        files = one_series([ultrasound(self.workdir)], os.path.join(self.workdir, "in"))
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
        expected = {(uid, k): sigmoid(scores(letterboxed(frame, (40, 56))))
                    for k, frame in enumerate(rendered(files[0], 3))}
        self.assertEqual(len(expected), 2)
        job, doc, sr = self.classify(files, "US", manifest_text("US", (40, 56), 3), expected)
        self.check_findings(sr, np.max(list(expected.values()), axis=0))

    def test_nuclear_medicine_frames_are_classified_each_in_the_window(self):
        files = one_series([nuclear_medicine(self.workdir)], os.path.join(self.workdir, "in"))
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
        pictures = rendered(files[0], 1)
        self.assertEqual(len(pictures), 3)
        # The frames differ, and so do their scores.
        self.assertGreater(abs(pictures[0].mean() - pictures[2].mean()), 0.05)
        expected = {(uid, k): sigmoid(scores(letterboxed(frame, (32, 32))))
                    for k, frame in enumerate(pictures)}
        job, doc, sr = self.classify(files, "NM", manifest_text("NM", (32, 32), 1,
                                                                aggregate="mean"), expected)
        self.check_findings(sr, np.mean(list(expected.values()), axis=0))

    def test_a_palette_colour_image_is_shown_in_its_colours(self):
        files = one_series([palette_image(self.workdir)], os.path.join(self.workdir, "in"))
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
        picture = rendered(files[0], 3)[0]
        # The tables make the channels differ: a grey rendering would not.
        self.assertGreater(abs(picture[0].mean() - picture[2].mean()), 0.05)
        expected = {(uid, 0): sigmoid(scores(letterboxed(picture, (24, 64))))}
        manifest = manifest_text("OT", (24, 64), 3)
        self.classify(files, "OT", manifest, expected)

    def test_grey_radiographs_are_windowed_and_monochrome1_is_inverted(self):
        files = one_series(radiographs(self.workdir), os.path.join(self.workdir, "in"))
        expected = {}
        pictures = []
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            frame = rendered(f, 1)[0]
            pictures.append(frame)
            expected[(uid, 0)] = sigmoid(scores(letterboxed(frame, (32, 32))))
        # The same pixels: MONOCHROME1 shows them inverted.
        np.testing.assert_allclose(pictures[1], 1 - pictures[0])
        self.assertGreater(abs(pictures[0].mean() - 0.5), 0.05)
        manifest = manifest_text("DX", (32, 32), 1, aggregate="mean")
        job, doc, sr = self.classify(files, "DX", manifest, expected)
        series = np.mean(list(expected.values()), axis=0)
        self.check_findings(sr, series)

    def test_three_heads_share_one_encoder_forward_per_series(self):
        names = ["SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "SC_rgb_small_odd.dcm"]
        files = one_series([os.path.join(PYDICOM_FILES, f) for f in names],
                           os.path.join(self.workdir, "in"))
        pts = make_encoder_and_heads(self.workdir)
        manifests = {
            "encoder": manifest_text("OT", (40, 56), 3, batch=4).split("output:")[0] +
            "output: {kind: embedding, channels: 3}\n",
            "first": head_manifest("encoder", ["Reddish"], "sigmoid"),
            "two": head_manifest("encoder", ["Red", "Green"], "softmax"),
            "last": head_manifest("encoder", ["Bluish"], "sigmoid"),
        }
        models = {}
        for name, text in manifests.items():
            path = os.path.join(self.workdir, name + ".yaml")
            with open(path, "w") as f:
                f.write(text)
            models[name] = {"file": pts[name], "manifest": path, "threads": 1}
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections={
                "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                          "port": pacs.port, "retry_initial_seconds": 1}},
                "models": models,
                "rules": [{"name": "pictures", "match": {"Modality": "OT"},
                           "run": ["first", "two", "last", "encoder"],
                           "send_results_to": ["pacs"]}]}, stable_seconds=1)
            n.start()
            harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

            def ended():
                st = n.status()
                jobs = st["jobs"]
                done = len(jobs) == 4 and all(j["state"] in ("done", "failed") for j in jobs)
                sent = len(st["outbox"]) == 3 and all(i["state"] == "sent" for i in st["outbox"])
                return jobs if done and sent else None
            jobs = harness.wait_until(ended, 120, 0.2, "four jobs and three SRs")
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
        self.assertEqual([j["state"] for j in jobs], ["done"] * 4, jobs)
        # One group: the encoder ran once, in one forward (4 images, batch 4),
        # for all four jobs; each job's record says so.
        ids = sorted(j["id"] for j in jobs)
        for j in jobs:
            self.assertEqual(j["encoder"]["model"], "encoder")
            self.assertEqual((j["encoder"]["runs"], j["encoder"]["forwards"]), (1, 1), j)
            self.assertEqual(sorted(j["encoder"]["jobs"]), ids)
        # The features and every head's findings, computed again here.
        features = {}
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for k, frame in enumerate(rendered(f, 3)):
                features[(uid, k)] = letterboxed(frame, (40, 56)).mean(axis=(1, 2))
        by_model = {j["model"]: j for j in jobs}
        with open(by_model["encoder"]["result"]) as fh:
            doc = json.load(fh)
        self.assertEqual(by_model["encoder"]["embedding"], {"features": 3, "images": 4})
        # DCMTK and pydicom convert YBR to RGB each with its own rounding:
        # one 8-bit level apart at most.
        got_features = {}
        for img in doc["images"]:
            key = (img["sop_instance_uid"], img["frame"])
            got_features[key] = np.array(img["features"])
            np.testing.assert_allclose(got_features[key], features[key], atol=1 / 255)
        self.assertEqual(set(got_features), set(features))
        heads = {
            "first": lambda f: sigmoid(np.array([20 * (f[0] - 0.3)])),
            "two": lambda f: softmax(10 * f[0:2]),
            "last": lambda f: sigmoid(np.array([20 * (f[2] - 0.6)])),
        }
        # Each head read exactly the encoder's features.
        for name, fn in heads.items():
            with open(by_model[name]["result"]) as fh:
                doc = json.load(fh)
            for img in doc["images"]:
                np.testing.assert_allclose(
                    img["probabilities"],
                    fn(got_features[(img["sop_instance_uid"], img["frame"])]),
                    atol=1e-5, err_msg=name)
            series = np.max([fn(v) for v in got_features.values()], axis=0)
            got = [doc["findings"][str(c + 1)]["probability"] for c in range(len(series))]
            np.testing.assert_allclose(got, series, atol=1e-5, err_msg=name)
        # An SR per head, none for the encoder's features; each valid.
        self.assertEqual(len(received), 3)
        for p in received:
            self.assertEqual(dciodvfy_errors(p), [])
            self.assertEqual(str(pydicom.dcmread(p).SOPClassUID), SR_CLASS)

    def test_signed_rescaled_values_are_windowed_whatever_the_unused_bits_hold(self):
        # 12 signed bits of 16 with junk in the unused top bits, Rescale
        # Slope and Intercept: MONOCHROME2, MONOCHROME1, and MONOCHROME2 with
        # a Presentation LUT Shape (rendered by DCMTK's DicomImage, the
        # others directly): each against its values computed here.
        template = pydicom.dcmread(radiographs(self.workdir)[0])
        rng = np.random.default_rng(3)
        values = template.pixel_array.astype(np.int32) - 2048        # -2048..1952
        junk = rng.integers(0, 16, values.shape) << 12
        stored = ((values & 0xFFF) | junk).astype(np.uint16)
        slope, intercept, center, width = 2.0, 100.0, 400.0, 5000.0
        shown = window(values * slope + intercept, center, width)
        self.assertGreater(shown.std(), 0.05)
        paths = []
        for i, (photometric, shape) in enumerate((("MONOCHROME2", None), ("MONOCHROME1", None),
                                                  ("MONOCHROME2", "IDENTITY"))):
            ds = template.copy()
            ds.PhotometricInterpretation = photometric
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            ds.WindowCenter, ds.WindowWidth = center, width
            if shape:
                ds.PresentationLUTShape = shape
            ds.PixelData = stored.tobytes()
            paths.append(os.path.join(self.workdir, "signed%d.dcm" % i))
            ds.save_as(paths[-1])
        files = one_series(paths, os.path.join(self.workdir, "in"))
        expected = {}
        for f, picture in zip(files, (shown, 1 - shown, shown)):
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            expected[(uid, 0)] = sigmoid(scores(letterboxed(picture[None], (32, 32))))
        manifest = manifest_text("DX", (32, 32), 1, aggregate="mean")
        self.classify(files, "DX", manifest, expected)


    def test_a_study_of_two_views_is_one_job_with_one_result(self):
        # PA and lateral of one study, each its own series and size, and an
        # AP the model does not accept: one job on PA + lateral, one SR
        # over both, the AP recorded not applicable.
        pa = pydicom.dcmread(radiographs(self.workdir)[0])
        study = generate_uid()
        files = []
        for view, transpose in (("PA", False), ("LL", True), ("AP", False)):
            ds = pa.copy()
            if transpose:
                pixels = np.ascontiguousarray(ds.pixel_array.T)
                ds.Rows, ds.Columns = pixels.shape
                ds.PixelData = pixels.tobytes()
            ds.ViewPosition = view
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            files.append(os.path.join(self.workdir, view + ".dcm"))
            ds.save_as(files[-1])
        expected = {}
        for f in files[:2]:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            expected[(uid, 0)] = sigmoid(scores(letterboxed(rendered(f, 1)[0], (32, 32))))
        manifest = manifest_text("DX", (32, 32), 1, aggregate="mean").replace(
            "  batch: 2\n", "  batch: 2\n  accept: {view_position: [PA, LL]}\n")
        sections = self.sections_for("DX", manifest)
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node(sections=sections(pacs.port), stable_seconds=1)
            n.start()
            harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"])

            def sent():
                st = n.status()
                items = st["outbox"]
                return st["jobs"] if len(st["jobs"]) == 2 and all(
                    j["state"] in ("done", "failed", "not_applicable") for j in st["jobs"]
                ) and items and all(i["state"] == "sent" for i in items) else None
            jobs = harness.wait_until(sent, 120, 0.2, "one SR for the study")
            outbox = n.status()["outbox"]
            self.assertEqual(n.stop(), 0)
            received = harness.list_files(pacs.out_dir)
        series = [str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)
                  for f in files]
        by_state = {j["state"]: j for j in jobs}
        self.assertEqual(set(by_state), {"done", "not_applicable"}, jobs)
        self.assertEqual(sorted(by_state["done"]["series"]), sorted(series[:2]))
        self.assertEqual(by_state["not_applicable"]["series_uid"], series[2])
        self.assertEqual(by_state["not_applicable"]["reason"],
                         "ViewPosition is AP; the model accepts PA, LL")
        self.assertEqual([i["kind"] for i in outbox], ["sr"])
        self.assertEqual(len(received), 1)
        self.assertEqual(dciodvfy_errors(received[0]), [])
        sr = pydicom.dcmread(received[0])
        with open(by_state["done"]["result"]) as f:
            doc = json.load(f)
        got = {(i["sop_instance_uid"], i["frame"]): i["probabilities"] for i in doc["images"]}
        self.assertEqual(set(got), set(expected))
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], want, atol=2e-3, err_msg=str(key))
        # The study's probability is the mean over both views.
        self.check_findings(sr, np.mean(list(expected.values()), axis=0))
        # The SR's evidence: both views, each under its own series.
        evidence = {str(r.SeriesInstanceUID): [str(i.ReferencedSOPInstanceUID)
                                               for i in r.ReferencedSOPSequence]
                    for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for r in s.ReferencedSeriesSequence}
        self.assertEqual(set(evidence), set(series[:2]))
        self.assertEqual(sorted(u for v in evidence.values() for u in v),
                         sorted(u for u, _ in expected))

    def test_a_window_from_the_manifest_replaces_the_images_own(self):
        files = one_series(radiographs(self.workdir)[:1], os.path.join(self.workdir, "in"))
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
        own = rendered(files[0], 1)[0]
        narrow = rendered(files[0], 1, manifest_window=(2500.0, 800.0))[0]
        self.assertGreater(abs(own.mean() - narrow.mean()), 0.05)
        expected = {(uid, 0): sigmoid(scores(letterboxed(narrow, (24, 64))))}
        manifest = manifest_text("DX", (24, 64), 1, window_=(2500.0, 800.0))
        self.classify(files, "DX", manifest, expected)


if __name__ == "__main__":
    unittest.main()
