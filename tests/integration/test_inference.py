#!/usr/bin/python3
"""Integration tests of the inference pipeline: a study sent to the real
node with storescu completes, its series are queued as jobs by the rules,
and the built-in model's labels come out exactly as its definition says.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_inference.InferenceTest.test_x
"""

import gzip
import json
import os
import re
import subprocess
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

import pydicom  # noqa: E402

BUILTIN_MANIFEST = os.path.join(harness.REPO_ROOT, "inference", "models", "ct-bone-body.yaml")
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")

RULES = [{"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"]}]


def slow_builtin_model(workdir, binary, patch=(1, 8, 8)):
    """The built-in model's file with a manifest of tiny patches: slow
    enough for a test to catch a job running (smaller PATCH, slower).
    Returns (file, manifest)."""
    manifest = os.path.join(workdir, "slow.yaml")
    with open(BUILTIN_MANIFEST) as f:
        text = f.read()
    slow, n = re.subn(r"(?m)^  patch: \[[0-9, ]+\]$", "  patch: [%d, %d, %d]" % patch, text)
    if n != 1:
        raise harness.HarnessError("the built-in manifest has no one 'patch:' line to replace")
    with open(manifest, "w") as f:
        f.write(slow)
    return os.path.join(os.path.dirname(binary), "models", "ct-bone-body.pt"), manifest


def models(file="builtin:ct-bone-body", manifest=None, device="cpu", workers=1):
    m = {"file": file, "device": device, "threads": 1, "workers": workers}
    if manifest:
        m["manifest"] = manifest
    return {"ct-bone-body": m}


def fine_manifest(workdir):
    """The built-in model's manifest, resampling to 0.25 mm: how much a job
    allocates then depends on the geometry it is sent. Returns its path."""
    manifest = os.path.join(workdir, "fine.yaml")
    with open(BUILTIN_MANIFEST) as f:
        text = f.read()
    if "spacing: none" not in text:
        raise harness.HarnessError("the built-in manifest no longer says 'spacing: none'")
    with open(manifest, "w") as f:
        f.write(text.replace("spacing: none", "spacing: [0.25, 0.25, 0.25]"))
    return manifest


def hostile_geometry_study(workdir):
    """One study of three 2-slice series whose geometry would have a model
    that resamples index outside its volume or allocate gigabytes."""
    study = pydicom.uid.generate_uid()
    # 2x2 pixels of a million mm each.
    huge = make_ct_series(os.path.join(workdir, "huge"), 2, rows=2, cols=2,
                          study_uid=study, series_number=1, pixel_spacing=(1e6, 1e6))
    # Positions near the largest double on an oblique plane: their
    # distance along the normal is -inf, the gap between them NaN.
    far = make_ct_series(os.path.join(workdir, "far"), 2, rows=2, cols=2,
                         study_uid=study, series_number=2)
    for path in far:
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = ["1.7e308", "-1.7e308", "0"]
        ds.ImageOrientationPatient = ["0.7071068", "0.7071068", "0", "0", "0", "-1"]
        ds.save_as(path)
    # 16x16 pixels of 100 mm, slices 100 mm apart: valid, but at 0.25 mm
    # it is 6001 x 6001 x 401 voxels (58 GB of float).
    coarse = make_ct_series(os.path.join(workdir, "coarse"), 2, rows=16, cols=16,
                            study_uid=study, series_number=3, spacing=100.0,
                            pixel_spacing=(100, 100))
    return huge + far + coarse


def phantom(z, rows, cols):
    """HU values with every threshold of the model on both sides."""
    hu = np.full((rows, cols), -1000, dtype=np.int16)          # air: background
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < (0.4 * rows) ** 2
    hu[body] = 40                                              # soft tissue: body
    hu[rows // 3:rows // 2, cols // 3:cols // 2] = 700 + 10 * z  # bone
    # The edges of each class, one voxel each, on every slice.
    edges = [-501, -500, -499, 0, 225, 226, 227, 3070, 3071, 3072, 3500]
    for i, v in enumerate(edges):
        hu[1, 1 + i] = v
    return hu


def expected_labels(hu):
    bone = (hu >= 226) & (hu <= 3071)
    body = (hu > -500) & ~bone
    return np.where(bone, 1, np.where(body, 2, 0)).astype(np.uint8)


def hu_of(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


def label_voxels(files):
    """{label: voxels} the built-in model must find in FILES (1 bone, 2 body)."""
    truth = [expected_labels(hu_of(f)) for f in files]
    return {label: int(sum((t == label).sum() for t in truth)) for label in (1, 2)}


class InferenceTest(NodeTestCase):
    def node_with_models(self, **kw):
        sections = {"models": kw.pop("models", models()), "rules": kw.pop("rules", RULES)}
        return self.node(sections=sections, stable_seconds=1, **kw)

    def wait_job(self, n, state=("done", "failed"), timeout=120, count=1):
        def check():
            jobs = n.status().get("jobs", [])
            ended = len(jobs) >= count and all(j["state"] in state for j in jobs)
            return jobs if ended else None
        return harness.wait_until(check, timeout, 0.2, "jobs to end")

    def test_builtin_model_labels_a_phantom_exactly(self):
        n = self.node_with_models()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 12, rows=64, cols=80,
                               pixel_fn=phantom)
        # Sent in reverse order: the volume is ordered by position, not arrival.
        harness.storescu(n.port, list(reversed(files)), ae_called=n.ae)
        jobs = self.wait_job(n)
        self.assertEqual(len(jobs), 1)
        job = jobs[0]
        self.assertEqual(job["state"], "done", job)
        self.assertIsNone(job["error"])
        self.assertEqual(job["model"], "ct-bone-body")
        self.assertGreaterEqual(job["seconds"], 0)

        want = label_voxels(files)
        self.assertEqual({int(k): v["voxels"] for k, v in job["labels"].items()}, want)
        self.assertEqual(job["labels"]["1"]["name"], "Bone")

        # Voxel by voxel, slice k of the result against the source slice it
        # names.
        with open(job["result"]) as f:
            result = json.load(f)
        grid = result["grid"]
        with gzip.open(os.path.join(os.path.dirname(job["result"]),
                                    result["labels_file"])) as f:
            labels = np.frombuffer(f.read(), dtype=np.uint8)
        labels = labels.reshape(grid["nz"], grid["ny"], grid["nx"])
        by_sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
                  for f in files}
        zs = []
        for k, s in enumerate(result["slices"]):
            src = by_sop[s["sop_instance_uid"]]
            np.testing.assert_array_equal(labels[k], expected_labels(hu_of(src)))
            zs.append(float(pydicom.dcmread(src).ImagePositionPatient[2]))
        self.assertEqual(zs, sorted(zs))
        self.assertEqual(n.stop(), 0)

    def test_every_lossless_encoding_gives_the_same_labels(self):
        # One series per encoding, each made of the same phantom; DCMTK's
        # own tools encode them and dcmsend -dn sends them as they are.
        encoders = {
            "explicit": None,
            "jpeg-lossless": ["dcmcjpeg", "+e1"],
            "jpeg-ls": ["dcmcjpls", "+el"],
            "rle": ["dcmcrle"],
            "deflated": ["dcmconv", "+td"],
            "big-endian": ["dcmconv", "+tb"],
        }
        n = self.node_with_models(rules=[{"name": "all", "run": ["ct-bone-body"]}])
        n.start()
        truth = None
        for name, cmd in encoders.items():
            raw = make_ct_series(os.path.join(self.workdir, name, "raw"), 6, rows=48, cols=40,
                                 pixel_fn=phantom)
            if truth is None:
                truth = label_voxels(raw)
            files = raw
            if cmd:
                files = []
                for f in raw:
                    out = f.replace(os.sep + "raw" + os.sep, os.sep)
                    subprocess.run([harness.require_tool(cmd[0])] + cmd[1:] + [f, out],
                                   check=True)
                    files.append(out)
            if name == "big-endian":
                # DCMTK's senders want explicit little endian first unless told.
                r = harness.storescu(n.port, files, ae_called=n.ae, extra=["-xb"])
                self.assertTrue(harness.all_stores_succeeded(r.stdout, 6), r.stdout)
            else:
                r = harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"], check=False)
                self.assertIn("with status SUCCESS  : 6", r.stdout, name)
        # An enhanced (multi-frame) CT image is a volume on its own.
        enhanced = os.path.join(harness.REPO_ROOT, "tests", "data", "image",
                                "enhanced_ct_3frames.dcm")
        harness.dcmsend(n.port, enhanced, ae_called=n.ae, extra=["-dn"])
        jobs = self.wait_job(n, count=len(encoders) + 1)
        self.assertEqual(len(jobs), len(encoders) + 1, jobs)
        self.assertTrue(all(j["state"] == "done" for j in jobs), jobs)
        sent_ts = {}
        for j in jobs:
            with open(j["result"]) as f:
                result = json.load(f)
            if result["grid"]["nz"] == 3:
                self.assertEqual((result["grid"]["nx"], result["grid"]["ny"]), (5, 4))
                continue
            counts = {int(k): v["voxels"] for k, v in j["labels"].items()}
            self.assertEqual(counts, truth, j)
            ts = self.stored_transfer_syntax(n, j["series_uid"])
            sent_ts[ts] = True
        # Every encoding arrived as itself (nothing was decompressed on the way).
        self.assertEqual(len(sent_ts), len(encoders), sent_ts)
        self.assertEqual(n.stop(), 0)

    def stored_transfer_syntax(self, n, series_uid):
        import sqlite3
        con = sqlite3.connect("file:%s?mode=ro" % n.db_path, uri=True)
        try:
            rows = con.execute("SELECT DISTINCT transfer_syntax FROM instances WHERE series_uid=?",
                               (series_uid,)).fetchall()
        finally:
            con.close()
        self.assertEqual(len(rows), 1)
        return rows[0][0]

    def test_a_model_spacing_is_resampled_to_and_back_from(self):
        # The model works at twice the slice and pixel spacing; its labels
        # must come back on the source grid, close to the exact ones.
        manifest = os.path.join(self.workdir, "coarse.yaml")
        with open(BUILTIN_MANIFEST) as f:
            text = f.read()
        self.assertIn("spacing: none", text)
        with open(manifest, "w") as f:
            f.write(text.replace("spacing: none", "spacing: [1.4, 1.4, 2.0]"))
        n = self.node_with_models(models=models(manifest=manifest))
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 20, rows=96, cols=96,
                               spacing=1.0, pixel_spacing=(0.7, 0.7))
        harness.storescu(n.port, files, ae_called=n.ae)
        job = self.wait_job(n)[0]
        self.assertEqual(job["state"], "done", job)
        with open(job["result"]) as f:
            grid = json.load(f)["grid"]
        self.assertEqual((grid["nx"], grid["ny"], grid["nz"]), (96, 96, 20))
        self.assertEqual(grid["spacing"], [0.7, 0.7, 1.0])
        for label, want in label_voxels(files).items():
            got = job["labels"][str(label)]["voxels"]
            self.assertLess(abs(got - want), 0.1 * want, (label, got, want))
        self.assertEqual(n.stop(), 0)

    def test_series_that_are_not_one_volume_fail_with_their_reason(self):
        n = self.node_with_models(rules=[{"name": "all", "run": ["ct-bone-body"]}])
        n.start()
        gap = make_ct_series(os.path.join(self.workdir, "gap"), 8, rows=16, cols=16,
                             pixel_fn=phantom)
        del gap[4]
        harness.storescu(n.port, gap, ae_called=n.ae)
        # A non-image object in a series of its own.
        harness.storescu(n.port, os.path.join(PYDICOM_FILES, "test-SR.dcm"), ae_called=n.ae,
                         extra=["-R"])
        jobs = self.wait_job(n, count=2)
        errors = sorted(j["error"] or "" for j in jobs)
        self.assertEqual(len(jobs), 2, jobs)
        self.assertTrue(all(j["state"] == "failed" for j in jobs), jobs)
        self.assertIn("uneven slice spacing", " ".join(errors))
        self.assertIn("no pixel data", " ".join(errors))
        self.assertEqual(n.stop(), 0)

    def test_hostile_geometry_fails_its_job_and_the_node_keeps_answering(self):
        # A model that resamples finely; three series whose geometry would
        # have it index outside its volume or allocate gigabytes.
        manifest = fine_manifest(self.workdir)
        n = self.node_with_models(models=models(manifest=manifest))
        n.start()
        pid = n.pid
        harness.storescu(n.port, hostile_geometry_study(self.workdir), ae_called=n.ae)
        # A node that dies is a failure at once, not a wait for its jobs.
        deadline = time.monotonic() + 120
        while True:
            if not n.running():
                self.fail("the node died (exit status %r) running the jobs" % n.proc.poll())
            jobs = n.status().get("jobs", [])
            if len(jobs) >= 3 and all(j["state"] in ("done", "failed") for j in jobs):
                break
            self.assertLess(time.monotonic(), deadline, "the jobs did not end: %r" % jobs)
            time.sleep(0.2)
        self.assertEqual(len(jobs), 3, jobs)
        self.assertTrue(all(j["state"] == "failed" for j in jobs), jobs)
        errors = " | ".join(sorted(j["error"] or "" for j in jobs))
        self.assertIn("Pixel Spacing 1000000 is not in (0, 100] mm", errors)
        self.assertIn("Image Position (Patient) 1.7e+308 is beyond 1000000 mm", errors)
        self.assertIn("resampling makes a 6001x6001x401 volume (the limit is 374865920 voxels)",
                      errors)
        # The same process, still answering at once.
        self.assertTrue(n.running())
        self.assertEqual(n.pid, pid)
        t0 = time.monotonic()
        harness.echoscu(n.port, ae_called=n.ae)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(n.stop(), 0)

    def test_series_no_rule_matches_gets_no_job(self):
        n = self.node_with_models()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "mr"), 3, rows=16, cols=16,
                               modality="MR")
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        harness.storescu(n.port, files, ae_called=n.ae)
        n.wait_for_study(study, state="complete", timeout=30)
        time.sleep(0.5)
        self.assertEqual(n.status()["jobs"], [])
        self.assertEqual(n.stop(), 0)

    def test_job_of_a_killed_node_is_reclaimed_and_completes_after_restart(self):
        built, manifest = slow_builtin_model(self.workdir, self.binary)
        n = self.node_with_models(models=models(file=built, manifest=manifest))
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 60, rows=256, cols=256,
                               pixel_fn=phantom)
        harness.storescu(n.port, files, ae_called=n.ae)

        def running():
            jobs = n.status()["jobs"]
            ended = [j for j in jobs if j["state"] in ("done", "failed")]
            self.assertEqual(ended, [], "the job ended before it could be interrupted")
            return [j for j in jobs if j["state"] == "running"]
        harness.wait_until(running, 30, 0.05, "the job to run")
        n.kill9()
        self.assertEqual(n.status()["jobs"][0]["state"], "running")
        n.start()
        jobs = self.wait_job(n, timeout=300)
        self.assertEqual(jobs[0]["state"], "done", jobs)
        self.assertEqual(jobs[0]["attempts"], 2)
        self.assertEqual(jobs[0]["labels"]["1"]["voxels"], label_voxels(files)[1])
        self.assertEqual(n.stop(), 0)

    def test_cuda_model_without_cuda_is_a_clear_start_up_error(self):
        n = self.node_with_models(models=models(device="cuda:0"))
        r = subprocess.run([self.binary, "serve", "-c", n.config_path], capture_output=True,
                           text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("model ct-bone-body", r.stderr)
        self.assertIn("cuda", r.stderr.lower())
        # check-config says so too: what serve would refuse, it refuses.
        r = subprocess.run([self.binary, "check-config", "-c", n.config_path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("model ct-bone-body: device cuda:0 requested but", r.stderr)
        self.assertIn("1 problem found", r.stderr)


if __name__ == "__main__":
    unittest.main()
