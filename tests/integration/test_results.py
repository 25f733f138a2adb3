#!/usr/bin/python3
"""Integration tests of the results path: a CT study sent with storescu to
the real node comes back to DCMTK's storescp (the PACS) as one DICOM SEG
and one TID 1500 SR, valid for dciodvfy, with exactly the built-in model's
voxels, whatever the network and the PACS do; and dcmjs, the library the
OHIF viewer reads SRs with (installed from npm), finds a graphic for every
measurement in that SR.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_results.ResultsTest.test_x
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import expected_labels, hu_of, phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

import pydicom  # noqa: E402

TOOLS = os.path.join(harness.REPO_ROOT, "tests", "tools")
sys.path.insert(0, TOOLS)
from verify_sr import planar_expectations  # noqa: E402
from npm_modules import npm_modules  # noqa: E402

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
# The built-in model's segments, as verify_sr.py takes them.
SEGMENTS = {1: ("Bone", "272673000"), 2: ("Soft tissue", "87784001")}
VOXEL_ML = 0.7 * 0.7 * 1.0 / 1000  # the test series' voxel
# dcmjs as the OHIF viewer 3.x reads SRs with it; pinned, so that a new
# release cannot change what the test proves unnoticed.
DCMJS_VERSION = "0.52.2"


def dciodvfy_errors(path):
    """dciodvfy's Error and Abort lines for PATH. A missing dciodvfy fails;
    so does a run that exits non-zero without saying why (it read nothing)."""
    r = subprocess.run([harness.require_tool("dciodvfy"), path], capture_output=True, text=True)
    out = r.stdout + r.stderr
    errors = [l for l in out.splitlines() if l.startswith(("Error", "Abort"))]
    if r.returncode != 0 and not errors:
        errors = ["dciodvfy exited with %d: %s" % (r.returncode, out[-2000:])]
    return errors


def dcmjs_modules():
    """The node_modules folder holding dcmjs DCMJS_VERSION, installed from
    the npm registry the first time into a cache outside the repository
    ($XDG_CACHE_HOME or ~/.cache, ainode-tests/npm; tests/tools/npm_modules.py).
    A missing npm or a failed install raises: the test that needs dcmjs
    fails, never skips."""
    return npm_modules("dcmjs", DCMJS_VERSION, missing_error=harness.MissingToolError)


class ResultsTest(NodeTestCase):
    def node_for(self, pacs_port, **dest):
        d = {"ae_title": "STORESCP", "host": "127.0.0.1", "port": pacs_port,
             "retry_initial_seconds": 1, "retry_factor": 2, "retry_max_seconds": 4}
        d.update(dest)
        sections = {
            "destinations": {"pacs": d},
            "models": {"ct-bone-body": {"file": "builtin:ct-bone-body", "threads": 1}},
            "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"],
                       "send_results_to": ["pacs"]}],
        }
        return self.node(sections=sections, stable_seconds=1, network_timeout_seconds=5)

    def series(self, name, slices=8, shuffle=False):
        files = make_ct_series(os.path.join(self.workdir, name), slices, rows=40, cols=48,
                               pixel_fn=phantom)
        order = list(files)
        if shuffle:
            random.Random(7).shuffle(order)
        return files, order

    def wait_outbox(self, n, state, count=2, timeout=120):
        def check():
            items = n.status()["outbox"]
            return items if len(items) >= count and all(i["state"] == state for i in items) \
                else None
        return harness.wait_until(check, timeout, 0.2, "outbox items %s" % state)

    def wait_first_failed_attempt(self, n):
        harness.wait_until(lambda: [i for i in n.status()["outbox"] if i["attempts"] >= 1],
                           60, 0.2, "a first failed attempt")

    def deliver(self, shuffle):
        """A series sent in position order or shuffled reaches the PACS as
        one valid SEG and SR, each sent once at the first attempt."""
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node_for(pacs.port)
            n.start()
            files, order = self.series("in", shuffle=shuffle)
            if shuffle:
                self.assertNotEqual(order, files)
            harness.storescu(n.port, order, ae_called=n.ae)
            items = self.wait_outbox(n, "sent")
            self.assertEqual(sorted(i["kind"] for i in items), ["seg", "sr"])
            self.assertTrue(all(i["attempts"] == 1 and i["error"] is None for i in items))
            self.check_results(pacs.out_dir, files)
            self.assertEqual(n.stop(), 0)

    def received(self, pacs_dir):
        """{SOP class: [paths]} of what the PACS stored."""
        out = {}
        for p in harness.list_files(pacs_dir):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            out.setdefault(str(ds.SOPClassUID), []).append(p)
        return out

    def expected(self, files):
        """The built-in model's labels for FILES, slice by slice in position
        order, with the files in that order."""
        by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
        return np.stack([expected_labels(hu_of(f)) for f in by_z]), by_z

    def check_results(self, pacs_dir, files):
        """The PACS holds one valid SEG and one valid SR with the exact labels;
        the SR's planar groups outline what the labels give."""
        got = self.received(pacs_dir)
        self.assertEqual(sorted(got), sorted([SEG_CLASS, SR_CLASS]), got)
        self.assertEqual(len(got[SEG_CLASS]), 1)
        self.assertEqual(len(got[SR_CLASS]), 1)
        seg, sr = got[SEG_CLASS][0], got[SR_CLASS][0]
        self.assertEqual(dciodvfy_errors(seg), [])
        self.assertEqual(dciodvfy_errors(sr), [])

        labels, by_z = self.expected(files)
        raw = os.path.join(self.workdir, "expected.raw")
        labels.tofile(raw)
        nz, ny, nx = labels.shape
        r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "verify_seg.py"), seg, raw,
                            str(nx), str(ny), str(nz)] + by_z, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        vols = {lab: int((labels == lab).sum()) * VOXEL_ML for lab in SEGMENTS}
        seg_uid = str(pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID)
        r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "verify_sr.py"), sr, seg_uid,
                            str(ds.SeriesInstanceUID)]
                           + ["%d:%s:%s=%r" % (n, name, code, vols[n])
                              for n, (name, code) in sorted(SEGMENTS.items())]
                           + ["--labels", raw, str(nx), str(ny), str(nz), "--slices"] + by_z,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return seg, sr

    def test_results_reach_the_pacs_as_a_valid_seg_and_sr(self):
        self.deliver(shuffle=False)

    def test_slices_sent_in_shuffled_order_give_the_same_seg(self):
        self.deliver(shuffle=True)

    def test_a_dcmjs_reader_finds_an_outline_for_every_measurement(self):
        """The SR of a real job, read with dcmjs as the OHIF viewer reads it:
        every measurement it would display has a graphic, and each
        segment's outline lies on the right image with the area, long
        axis and volume numpy computes from the labels."""
        node = shutil.which("node")
        if not node:
            raise harness.MissingToolError(
                "required program 'node' is not installed or not on PATH (Debian package "
                "nodejs; deploy/setup-debian.sh installs it)")
        modules = dcmjs_modules()
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node_for(pacs.port)
            n.start()
            files, order = self.series("in")
            harness.storescu(n.port, order, ae_called=n.ae)
            self.wait_outbox(n, "sent")
            _, sr = self.check_results(pacs.out_dir, files)
            self.assertEqual(n.stop(), 0)

        labels, by_z = self.expected(files)
        planar = planar_expectations(labels, by_z)
        self.assertEqual(sorted(planar), sorted(SEGMENTS))  # both segments have voxels
        segments = []
        for number, (name, _) in sorted(SEGMENTS.items()):
            p = planar[number]
            segments.append({
                "tracking_identifier": "%s %d" % (name, number),
                "sop_instance": p["sop_instance"], "sop_class": p["sop_class"],
                "rows": p["rows"], "columns": p["columns"],
                "area_mm2": p["area_mm2"], "diameter_mm": p["diameter_mm"],
                "volume_ml": int((labels == number).sum()) * VOXEL_ML,
            })
        expected = os.path.join(self.workdir, "dcmjs_expected.json")
        with open(expected, "w") as f:
            json.dump({"segments": segments}, f)
        r = subprocess.run([node, os.path.join(TOOLS, "dcmjs_sr_check.js"), sr, expected],
                           env=dict(os.environ, NODE_PATH=modules), capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("dcmjs_sr_check: OK", r.stdout)

    def test_a_pacs_down_for_20_seconds_gets_everything_once(self):
        pacs = harness.StoreSCP(os.path.join(self.workdir, "pacs"), extra=["+uf"])
        n = self.node_for(pacs.port)
        n.start()
        files, order = self.series("in")
        harness.storescu(n.port, order, ae_called=n.ae)
        self.wait_first_failed_attempt(n)
        time.sleep(20)
        items = n.status()["outbox"]
        self.assertTrue(all(i["state"] == "pending" and i["attempts"] >= 3 for i in items),
                        items)
        self.assertIn("cannot open an association", items[0]["error"])
        with pacs:
            self.wait_outbox(n, "sent", timeout=30)
            # Nothing lost, nothing twice (storescp +uf keeps every copy).
            got = self.received(pacs.out_dir)
            self.assertEqual({k: len(v) for k, v in got.items()}, {SEG_CLASS: 1, SR_CLASS: 1})
            self.check_results(pacs.out_dir, files)
        self.assertEqual(n.stop(), 0)

    def test_failure_statuses_are_retried_dead_lettered_and_retried_by_hand(self):
        pacs_dir = os.path.join(self.workdir, "pacs")
        with harness.StoreSCP(pacs_dir) as pacs:
            # A file where storescp writes: every C-STORE is refused (0xA700).
            shutil.rmtree(pacs_dir)
            with open(pacs_dir, "w") as f:
                f.write("not a directory")
            n = self.node_for(pacs.port, max_attempts=3)
            n.start()
            files, order = self.series("in")
            harness.storescu(n.port, order, ae_called=n.ae)
            items = self.wait_outbox(n, "failed", timeout=60)
            for i in items:
                self.assertEqual(i["attempts"], 3)
                self.assertIn("status 0xa700", i["error"].lower())
            # The PACS is repaired; the admin re-queues what was dead-lettered.
            os.unlink(pacs_dir)
            os.mkdir(pacs_dir)
            r = n.cli("retry", "-c", n.config_path, "--all-failed")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("2 items queued again", r.stdout)
            self.wait_outbox(n, "sent", timeout=30)
            self.check_results(pacs_dir, files)
            r = n.cli("retry", "-c", n.config_path, "1")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("not a failed one", r.stderr)
            self.assertEqual(n.stop(), 0)

    def test_results_written_but_not_sent_are_sent_after_a_crash(self):
        # The PACS is down, so the results wait in the outbox when the node
        # is killed; the restarted node sends them, once.
        pacs = harness.StoreSCP(os.path.join(self.workdir, "pacs"), extra=["+uf"])
        n = self.node_for(pacs.port)
        n.start()
        files, order = self.series("in")
        harness.storescu(n.port, order, ae_called=n.ae)
        self.wait_first_failed_attempt(n)
        n.kill9()
        self.assertTrue(all(i["state"] == "pending" for i in n.status()["outbox"]))
        with pacs:
            n.start()
            self.wait_outbox(n, "sent", timeout=30)
            got = self.received(pacs.out_dir)
            self.assertEqual({k: len(v) for k, v in got.items()}, {SEG_CLASS: 1, SR_CLASS: 1})
            self.check_results(pacs.out_dir, files)
        self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
