#!/usr/bin/python3
"""Integration tests of what makes a result trustworthy: a series outside
its model's input.accept is recorded as not applicable with the reason and
never runs; every result carries the SHA-256 of the model file and of the
manifest it was made with, and the manifest's intended use.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_trust.TrustTest.test_x
"""

import hashlib
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import BUILTIN_MANIFEST, phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

import pydicom  # noqa: E402

MODEL = "ct-bone-body"
INTENDED_USE = "Bone and soft tissue of synthetic CT phantoms; not for diagnosis"
KNEE_REASON = "BodyPartExamined is KNEE; the model accepts CHEST"
SPACING_REASON = "PixelSpacing is 2\\2 mm; the model accepts 0.5..1 mm"


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def accepting_manifest(workdir):
    """The built-in manifest with an intended use and an input.accept of
    chest series of 0.5..1 mm pixels. Returns its path."""
    with open(BUILTIN_MANIFEST) as f:
        text = f.read()
    family = "  family: {value: \"123105\", scheme: DCM, meaning: Histogram Analysis}\n"
    inputs = "input:\n  modality: CT\n"
    if family not in text or inputs not in text:
        raise harness.HarnessError("the built-in manifest's algorithm or input changed")
    text = text.replace(family, family + "  intended_use: %s\n" % INTENDED_USE)
    text = text.replace(inputs, inputs + "  accept:\n"
                                         "    modality: [CT]\n"
                                         "    body_part: [CHEST]\n"
                                         "    pixel_spacing: [0.5, 1.0]\n"
                                         "    photometric_interpretation: [MONOCHROME2]\n")
    path = os.path.join(workdir, "accepting.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class TrustTest(NodeTestCase):
    def node_for(self, pacs_port):
        self.model_file = os.path.join(os.path.dirname(self.binary), "models", MODEL + ".pt")
        self.manifest = accepting_manifest(self.workdir)
        sections = {
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                      "port": pacs_port, "retry_initial_seconds": 1}},
            "models": {MODEL: {"file": self.model_file, "manifest": self.manifest,
                               "threads": 1}},
            "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": [MODEL],
                       "send_results_to": ["pacs"]}],
        }
        return self.node(sections=sections, stable_seconds=1)

    def jobs_by_series(self, n):
        return {j["series_uid"]: j for j in n.status()["jobs"]}

    def wait_jobs_ended(self, n, count, timeout=120):
        def check():
            jobs = n.status()["jobs"]
            ended = len(jobs) == count and all(
                j["state"] in ("done", "failed", "not_applicable") for j in jobs)
            return jobs if ended else None
        return harness.wait_until(check, timeout, 0.2, "jobs to end")

    def wait_sent(self, n, count, timeout=120):
        def check():
            items = n.status()["outbox"]
            return items if len(items) == count and all(i["state"] == "sent" for i in items) \
                else None
        return harness.wait_until(check, timeout, 0.2, "results sent")

    def assert_not_applicable(self, job, reason):
        self.assertEqual(job["state"], "not_applicable", job)
        self.assertEqual(job["reason"], reason)
        self.assertIsNone(job["error"])  # not a failure
        self.assertEqual(job["attempts"], 0)  # never claimed
        self.assertIsNone(job["result"])
        self.assertIsNone(job["labels"])
        self.assertIsNone(job["model_sha256"])  # no model ever ran for it

    def test_series_outside_accept_are_not_applicable_and_never_run_a_series_inside_runs(self):
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node_for(pacs.port)
            n.start()
            study = pydicom.uid.generate_uid()
            common = dict(rows=32, cols=40, study_uid=study, pixel_fn=phantom)
            chest = make_ct_series(os.path.join(self.workdir, "chest"), 6, series_number=1,
                                   **common)
            knee = make_ct_series(os.path.join(self.workdir, "knee"), 6, series_number=2,
                                  body_part="KNEE", **common)
            coarse = make_ct_series(os.path.join(self.workdir, "coarse"), 6, series_number=3,
                                    pixel_spacing=(2.0, 2.0), **common)
            uid = {name: str(pydicom.dcmread(files[0]).SeriesInstanceUID)
                   for name, files in (("chest", chest), ("knee", knee), ("coarse", coarse))}
            r = harness.storescu(n.port, chest + knee + coarse, ae_called=n.ae)
            self.assertTrue(harness.all_stores_succeeded(r.stdout, 18), r.stdout)

            self.wait_jobs_ended(n, 3)
            jobs = self.jobs_by_series(n)
            self.assertEqual(jobs[uid["chest"]]["state"], "done", jobs[uid["chest"]])
            self.assert_not_applicable(jobs[uid["knee"]], KNEE_REASON)
            self.assert_not_applicable(jobs[uid["coarse"]], SPACING_REASON)
            # Only the chest series' SEG and SR go out.
            items = self.wait_sent(n, 2)
            self.assertEqual(sorted(i["kind"] for i in items), ["seg", "sr"])
            self.assertEqual({i["id"] for i in items},
                             {i["id"] for i in n.status()["outbox"]})

            # The table and explain say why, in the same words.
            table = n.cli("status", "-c", n.config_path, check=True).stdout
            for series, reason in (("knee", KNEE_REASON), ("coarse", SPACING_REASON)):
                line = [ln for ln in table.splitlines()
                        if ln.startswith("%-6d  %s " % (jobs[uid[series]]["id"], MODEL))]
                self.assertEqual(len(line), 1, table)
                self.assertIn(" not_applicable ", line[0])
                self.assertTrue(line[0].endswith(reason), line[0])
            explained = n.cli("explain", "-c", n.config_path, study, check=True).stdout
            for reason in (KNEE_REASON, SPACING_REASON):
                self.assertIn("%s: not applicable (%s): recorded, never run" % (MODEL, reason),
                              explained)
            self.assertEqual(explained.count("not applicable"), 2, explained)
            # Files not sent yet are explained the same way.
            explained = n.cli("explain", "-c", n.config_path, *knee, check=True).stdout
            self.assertIn("%s: not applicable (%s)" % (MODEL, KNEE_REASON), explained)

            # Still so after a while and after a restart: nothing runs, nothing is sent.
            time.sleep(3)
            self.assertEqual(self.jobs_by_series(n), jobs)
            self.assertEqual(n.stop(), 0)
            n.start()
            time.sleep(3)
            after = self.jobs_by_series(n)
            for series, reason in (("knee", KNEE_REASON), ("coarse", SPACING_REASON)):
                self.assert_not_applicable(after[uid[series]], reason)
            self.assertEqual(after[uid["chest"]]["state"], "done")
            self.assertEqual(len(n.status()["outbox"]), 2)
            self.assertEqual(len(harness.list_files(pacs.out_dir)), 2)
            self.assertIn("not applicable", n.log())
            self.assertEqual(n.stop(), 0)

    def test_a_result_carries_the_sha256_of_its_model_and_manifest(self):
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.node_for(pacs.port)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, "in"), 6, rows=32, cols=40,
                                   pixel_fn=phantom)
            harness.storescu(n.port, files, ae_called=n.ae)
            job = self.wait_jobs_ended(n, 1)[0]
            self.assertEqual(job["state"], "done", job)
            model_sha, manifest_sha = sha256_of(self.model_file), sha256_of(self.manifest)
            self.assertNotEqual(model_sha, manifest_sha)
            self.assertEqual(job["model_sha256"], model_sha)
            self.assertEqual(job["manifest_sha256"], manifest_sha)
            self.assertIsNone(job["reason"])
            with open(job["result"]) as f:
                identity = json.load(f)["identity"]
            self.assertEqual(identity, {
                "algorithm_name": "ainode CT bone/body reference",
                "algorithm_version": "1.0",
                "model_sha256": model_sha,
                "manifest_sha256": manifest_sha,
                "intended_use": INTENDED_USE,
            })
            self.wait_sent(n, 2)
            self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
