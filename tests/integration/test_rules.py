#!/usr/bin/python3
"""Integration tests of the rules as the admin sees them: `ainode explain`
on a stored study and on files, and check-config on the shipped examples.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_rules.RulesTest.test_x
"""

import glob
import os
import re
import signal
import sys
import time
import unittest

import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series, make_study  # noqa: E402
from test_inference import phantom, slow_builtin_model  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

RULES = {
    "destinations": {"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": 11999}},
    "models": {"ct-bone-body": {"file": "builtin:ct-bone-body"}},
    "rules": [
        {"name": "chest-ct", "match": {"Modality": "CT", "BodyPartExamined": ["CHEST", "THORAX"],
                                       "SeriesDescription": {"regex": "lung|chest"}},
         "run": ["ct-bone-body"]},
        {"name": "mr-archive", "match": {"Modality": "MR"}, "forward_to": ["archive"],
         "continue": True},
        {"name": "thin", "match": {"SliceThickness": {"range": [0.5, 2.5]}},
         "forward_to": ["archive"]},
    ],
}


class RulesTest(NodeTestCase):
    def study(self):
        return make_study(os.path.join(self.workdir, "in"), [
            dict(modality="CT", slices=3, rows=16, cols=16, body_part="CHEST",
                 series_description="CHEST lung window"),
            dict(modality="CT", slices=2, rows=16, cols=16, body_part="HEAD",
                 series_description="Brain"),
            dict(modality="MR", slices=2, rows=16, cols=16, body_part="HEAD",
                 series_description="T1"),
        ])

    def explain(self, n, *args):
        r = n.cli("explain", "-c", n.config_path, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        # One block per series, keyed by its UID.
        blocks, current = {}, None
        for line in r.stdout.splitlines():
            if line.startswith("series "):
                current = line.split()[1]
                blocks[current] = []
            elif current:
                blocks[current].append(line.strip())
        return blocks

    def check(self, blocks, study):
        chest, head, mr = (s["series_uid"] for s in study["series"])
        self.assertIn("MATCHES", blocks[chest])
        self.assertIn("runs: ct-bone-body", blocks[chest])
        self.assertIn("rule mr-archive: not evaluated (an earlier rule matched and does not "
                      "continue)", blocks[chest])
        self.assertTrue(any(l.startswith("match.BodyPartExamined") and "failed" in l
                            and "HEAD" in l for l in blocks[head]), blocks[head])
        # MR: mr-archive matches and continues; thin (1 mm slices) matches too.
        self.assertEqual(blocks[mr].count("MATCHES"), 2, blocks[mr])
        self.assertIn("forwards to: archive", blocks[mr])

    def test_explain_shows_every_rule_for_each_stored_series(self):
        n = self.node(sections=RULES)
        n.start()
        study = self.study()
        files = [f for s in study["series"] for f in s["files"]]
        harness.storescu(n.port, files, ae_called=n.ae)
        n.wait_for_study(study["study_uid"], instances=len(files))
        self.check(self.explain(n, study["study_uid"]), study)
        self.assertEqual(n.stop(), 0)

    def test_explain_reads_dicom_files_too(self):
        n = self.node(sections=RULES)
        study = self.study()
        files = [f for s in study["series"] for f in s["files"]]
        self.check(self.explain(n, *files), study)

    def test_explain_of_a_file_shows_its_real_values(self):
        # Every condition names an attribute the file has: each must be
        # shown with the file's value, none as "absent".
        files = make_ct_series(os.path.join(self.workdir, "one"), 2, rows=16, cols=16,
                               patient_id="PID-42", study_date="20240131",
                               accession_number="ACC-77", study_id="S9",
                               study_description="CT THORAX", protocol_name="LUNG LOW DOSE")
        for f in files:
            ds = pydicom.dcmread(f)
            ds.ContrastBolusAgent = "OMNIPAQUE 350"
            ds.PatientSex = "F"
            ds.Manufacturer = "ACME"
            ds.save_as(f)
        ds = pydicom.dcmread(files[0])
        want = {
            "PatientID": "PID-42", "StudyDate": "20240131", "AccessionNumber": "ACC-77",
            "StudyID": "S9", "StudyDescription": "CT THORAX", "ProtocolName": "LUNG LOW DOSE",
            "ContrastBolusAgent": "OMNIPAQUE 350", "PatientSex": "F", "Manufacturer": "ACME",
            "StudyInstanceUID": str(ds.StudyInstanceUID),
            "SeriesInstanceUID": str(ds.SeriesInstanceUID),
            "SOPClassUID": str(ds.SOPClassUID),
        }
        match = {k: {"present": True} for k in want}
        sections = {"destinations": RULES["destinations"],
                    "rules": [{"name": "all-present", "match": match,
                               "forward_to": ["archive"]}]}
        n = self.node(sections=sections)
        blocks = self.explain(n, *files)
        lines = blocks[str(ds.SeriesInstanceUID)]
        for keyword, value in want.items():
            line = [l for l in lines if l.startswith("match.%s " % keyword)]
            self.assertEqual(len(line), 1, (keyword, lines))
            self.assertIn("held", line[0])
            self.assertIn("(series value: %s)" % value, line[0])
        self.assertIn("MATCHES", lines)
        self.assertFalse(any("absent" in l for l in lines), lines)

    def test_explain_of_an_unknown_study_is_an_error(self):
        n = self.node(sections=RULES)
        n.start()
        r = n.cli("explain", "-c", n.config_path, "1.2.3.4")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no study 1.2.3.4", r.stderr)
        self.assertEqual(n.stop(), 0)

    def test_forwarding_delivers_byte_identical_instances(self):
        archive_dir = os.path.join(self.workdir, "archive")
        with harness.StoreSCP(archive_dir, aet="ARCHIVE", extra=["-B", "+xa"]) as archive:
            sections = {
                "destinations": {"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1",
                                             "port": archive.port}},
                "rules": [{"name": "mr-archive", "match": {"Modality": "MR"},
                           "forward_to": ["archive"]}],
            }
            n = self.node(sections=sections, stable_seconds=1)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, "mr"), 3, rows=16, cols=16,
                                   modality="MR")
            # A JPEG-LS instance of the same study: forwarded as JPEG-LS.
            jls = pydicom.dcmread(os.path.join(os.path.dirname(pydicom.__file__), "data",
                                               "test_files", "MR_small_jpeg_ls_lossless.dcm"))
            first = pydicom.dcmread(files[0], stop_before_pixels=True)
            jls.StudyInstanceUID = first.StudyInstanceUID
            jls.SeriesInstanceUID = first.SeriesInstanceUID
            jls.SOPInstanceUID = pydicom.uid.generate_uid()
            jls.file_meta.MediaStorageSOPInstanceUID = jls.SOPInstanceUID
            jls_path = os.path.join(self.workdir, "jls.dcm")
            jls.save_as(jls_path, write_like_original=True)
            harness.storescu(n.port, files, ae_called=n.ae)
            harness.dcmsend(n.port, jls_path, ae_called=n.ae, extra=["-dn"])
            items = harness.wait_until(
                lambda: (lambda o: o if len(o) == 4 and all(i["state"] == "sent" for i in o)
                         else None)(n.status()["outbox"]), 60, 0.2, "4 forwarded instances")
            self.assertEqual({i["kind"] for i in items}, {"forward"})
            received = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
                        for p in harness.list_files(archive_dir)}
            self.assertEqual(len(received), 4)
            for stored in n.stored_files():
                ds = pydicom.dcmread(stored, stop_before_pixels=True)
                got = received[str(ds.SOPInstanceUID)]
                self.assertEqual(harness.dataset_bytes(got), harness.dataset_bytes(stored))
                self.assertEqual(
                    str(pydicom.dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID),
                    str(ds.file_meta.TransferSyntaxUID))
            self.assertEqual(n.stop(), 0)

    def test_a_stat_study_overtakes_a_queue_of_normal_ones(self):
        # One slow worker; five normal series queue up, then an emergency
        # study from the ED's CT arrives and is run next.
        built, manifest = slow_builtin_model(self.workdir, self.binary)
        sections = {
            "models": {"m": {"file": built, "manifest": manifest, "threads": 1, "workers": 1}},
            "rules": [
                {"name": "stat-ed", "match": {"calling_ae": "ED_CT"}, "run": ["m"],
                 "priority": "stat"},
                {"name": "ct", "match": {"Modality": "CT"}, "run": ["m"]},
            ],
        }
        n = self.node(sections=sections, stable_seconds=1)
        n.start()
        normal = make_study(os.path.join(self.workdir, "normal"), [
            dict(slices=40, rows=256, cols=256, pixel_fn=phantom) for _ in range(5)])
        harness.storescu(n.port, [f for s in normal["series"] for f in s["files"]],
                         ae_called=n.ae, ae_calling="CT1")
        harness.wait_until(lambda: [j for j in n.status()["jobs"] if j["state"] == "running"],
                           30, 0.05, "the first normal job to run")
        stat = make_ct_series(os.path.join(self.workdir, "stat"), 4, rows=32, cols=32,
                              pixel_fn=phantom)
        harness.storescu(n.port, stat, ae_called=n.ae, ae_calling="ED_CT")
        def stat_done():
            jobs = n.status()["jobs"]
            stat = [j for j in jobs if j["study_uid"] != normal["study_uid"]]
            return jobs if stat and stat[0]["state"] == "done" else None
        jobs = harness.wait_until(stat_done, 300, 0.2, "the stat job to finish")
        stat_job = [j for j in jobs if j["study_uid"] != normal["study_uid"]][0]
        normal_jobs = [j for j in jobs if j["study_uid"] == normal["study_uid"]]
        self.assertEqual(len(normal_jobs), 5, jobs)
        # It was queued last, and yet it is done while normal jobs queued
        # before it have not even started: it overtook them. (The rest of
        # the queue need not run for that to be shown.)
        self.assertEqual(stat_job["id"], max(j["id"] for j in jobs))
        self.assertTrue([j for j in normal_jobs if j["state"] == "queued"], jobs)
        self.assertEqual(n.stop(), 0)

    def test_reload_refuses_a_broken_config_and_applies_a_valid_one(self):
        sections = {"models": {"ct-bone-body": {"file": "builtin:ct-bone-body"}},
                    "rules": [{"name": "ct", "match": {"Modality": "CT"},
                               "run": ["ct-bone-body"]}]}
        n = self.node(sections=sections, stable_seconds=1)
        n.start()
        good = n.config_text()

        # Broken: refused with its positioned errors, the node keeps serving
        # with the old rules.
        n.write_raw_config(good + "rules: [\n")
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: "reload refused" in n.log(), 10, 0.1, "the refusal")
        self.assertRegex(n.log(), re.escape(n.config_path) + r":\d+:\d+: ")
        self.assertEqual(harness.echoscu(n.port, ae_called=n.ae, check=False).returncode, 0)
        # `ainode reload` validates first: a broken file is not even sent.
        r = n.cli("reload", "-c", n.config_path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("flow sequence", r.stderr)
        n.write_raw_config(good)  # (status reads the file too)
        ct1 = make_ct_series(os.path.join(self.workdir, "ct1"), 2, rows=16, cols=16,
                             pixel_fn=phantom)
        harness.storescu(n.port, ct1, ae_called=n.ae)
        harness.wait_until(lambda: len(n.status()["jobs"]) == 1, 20, 0.2, "a job by the old rule")

        # Valid: from now on only MR series run the model.
        n.write_raw_config(good.replace("Modality: CT", "Modality: MR"))
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        harness.wait_until(lambda: "reloaded: 1 rule" in n.log(), 10, 0.1, "the reload")
        ct2 = make_ct_series(os.path.join(self.workdir, "ct2"), 2, rows=16, cols=16,
                             pixel_fn=phantom)
        mr = make_ct_series(os.path.join(self.workdir, "mr"), 2, rows=16, cols=16,
                            modality="MR", pixel_fn=phantom)
        harness.storescu(n.port, ct2 + mr, ae_called=n.ae)
        mr_study = str(pydicom.dcmread(mr[0], stop_before_pixels=True).StudyInstanceUID)
        ct2_study = str(pydicom.dcmread(ct2[0], stop_before_pixels=True).StudyInstanceUID)
        n.wait_for_study(ct2_study, state="complete", timeout=10)
        jobs = harness.wait_until(lambda: (lambda j: j if len(j) == 2 else None)(
            n.status()["jobs"]), 20, 0.2, "the MR job")
        self.assertEqual(jobs[1]["study_uid"], mr_study)
        time.sleep(1)
        self.assertEqual(len(n.status()["jobs"]), 2)  # no job for the second CT study

        # What a running node cannot change is refused, not half applied.
        n.write_raw_config(good.replace("port: %d" % n.port, "port: %d" % (n.port + 1)))
        n.signal(signal.SIGHUP)
        # The refusal names exactly the restart-only keys that changed.
        harness.wait_until(lambda: "reload refused: node.port changed: restart ainode to apply"
                           in n.log(), 10, 0.1, "the refusal of a port change")
        self.assertEqual(harness.echoscu(n.port, ae_called=n.ae, check=False).returncode, 0)
        self.assertEqual(n.stop(), 0)

    def test_reload_adds_a_model_and_retires_a_removed_one(self):
        sections = {"models": {"ct-bone-body": {"file": "builtin:ct-bone-body"}},
                    "rules": [{"name": "ct", "match": {"Modality": "CT"},
                               "run": ["ct-bone-body"]}]}
        n = self.node(sections=sections, stable_seconds=1)
        n.start()
        good = n.config_text()
        # The old model is replaced by a new name: its workers must start on
        # reload and the removed model's workers must go.
        n.write_raw_config(good.replace("ct-bone-body", "bone-v2")
                           .replace("builtin:bone-v2", "builtin:ct-bone-body"))
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        harness.wait_until(lambda: "reloaded: 1 rule, 1 model" in n.log(), 10, 0.1,
                           "the reload")
        self.assertIn('event=worker.retired model=ct-bone-body msg="a worker retires"', n.log())
        self.assertIn('event=worker.started model=bone-v2 msg="a worker starts"', n.log())
        ct = make_ct_series(os.path.join(self.workdir, "ct"), 2, rows=16, cols=16,
                            pixel_fn=phantom)
        harness.storescu(n.port, ct, ae_called=n.ae)
        jobs = harness.wait_until(lambda: (lambda j: j if len(j) == 1 and j[0]["state"] in
                                           ("done", "failed") else None)(n.status()["jobs"]),
                                  60, 0.2, "the job of the added model")
        self.assertEqual(jobs[0]["model"], "bone-v2")
        self.assertEqual(jobs[0]["state"], "done", jobs)
        self.assertEqual(n.stop(), 0)

    def test_retention_deletes_only_what_it_may(self):
        # A high-water mark of 1 % is always passed: everything that may go,
        # goes. A study whose results still wait to be sent may not.
        sections = {
            "destinations": {"down": {"ae_title": "DOWN", "host": "127.0.0.1",
                                      "port": harness.free_port(),
                                      "retry_initial_seconds": 3600}},
            "rules": [{"name": "mr", "match": {"Modality": "MR"}, "forward_to": ["down"]}],
        }
        n = self.node(sections=sections, stable_seconds=1, disk_high_water_percent=1)
        n.start()
        ct = make_ct_series(os.path.join(self.workdir, "ct"), 2, rows=16, cols=16)
        mr = make_ct_series(os.path.join(self.workdir, "mr"), 2, rows=16, cols=16,
                            modality="MR")
        harness.storescu(n.port, ct + mr, ae_called=n.ae)
        ct_study = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
        mr_study = str(pydicom.dcmread(mr[0], stop_before_pixels=True).StudyInstanceUID)
        harness.wait_until(lambda: ct_study not in n.studies(), 30, 0.2,
                           "the CT study to be deleted")
        self.assertEqual(n.studies()[mr_study]["state"], "complete")
        self.assertIn("retention: 1 study deleted", n.log())
        # Index and files agree: only the MR study's files remain.
        self.assertEqual(len(n.stored_files()), 2)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_three_studies_are_each_routed_to_exactly_their_models_and_destinations(self):
        with harness.StoreSCP(os.path.join(self.workdir, "pacs"), aet="PACS") as pacs, \
                harness.StoreSCP(os.path.join(self.workdir, "archive"), aet="ARCHIVE") as arch:
            sections = {
                "destinations": {
                    "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
                    "archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": arch.port},
                },
                "models": {"bone": {"file": "builtin:ct-bone-body"},
                           "bone-ed": {"file": "builtin:ct-bone-body"}},
                "rules": [
                    {"name": "ed", "match": {"calling_ae": {"glob": "ED_*"}}, "run": ["bone-ed"],
                     "priority": "stat"},
                    {"name": "chest", "match": {"Modality": "CT", "BodyPartExamined": "CHEST"},
                     "run": ["bone"], "send_results_to": ["pacs"]},
                    {"name": "mr", "match": {"Modality": "MR"}, "forward_to": ["archive"]},
                ],
            }
            n = self.node(sections=sections, stable_seconds=1)
            n.start()
            chest = make_ct_series(os.path.join(self.workdir, "chest"), 3, rows=24, cols=24,
                                   body_part="CHEST", pixel_fn=phantom)
            mr = make_ct_series(os.path.join(self.workdir, "mr"), 2, rows=24, cols=24,
                                modality="MR", body_part="HEAD")
            ed = make_ct_series(os.path.join(self.workdir, "ed"), 3, rows=24, cols=24,
                                body_part="HEAD", pixel_fn=phantom)
            harness.storescu(n.port, chest + mr, ae_called=n.ae, ae_calling="CT_MAIN")
            harness.storescu(n.port, ed, ae_called=n.ae, ae_calling="ED_CT1")

            def study_of(files):
                return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

            def settled():
                st = n.status()
                done = len(st["jobs"]) == 2 and all(j["state"] == "done" for j in st["jobs"])
                sent = len(st["outbox"]) == 4 and all(i["state"] == "sent" for i in st["outbox"])
                return st if done and sent else None
            st = harness.wait_until(settled, 120, 0.2, "jobs done and sends delivered")
            jobs = {j["study_uid"]: j["model"] for j in st["jobs"]}
            self.assertEqual(jobs, {study_of(chest): "bone", study_of(ed): "bone-ed"})
            routes = sorted((i["study_uid"] == study_of(chest) and "chest" or
                             i["study_uid"] == study_of(mr) and "mr" or "ed",
                             i["destination"], i["kind"]) for i in st["outbox"])
            self.assertEqual(routes, [("chest", "pacs", "seg"), ("chest", "pacs", "sr"),
                                      ("mr", "archive", "forward"),
                                      ("mr", "archive", "forward")])
            self.assertEqual(len(harness.list_files(pacs.out_dir)), 2)
            self.assertEqual(st["unmatched_series"], [])
            got = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                   for p in harness.list_files(arch.out_dir)}
            self.assertEqual(got, {study_of(mr)})
            self.assertEqual(n.stop(), 0)

    def test_required_series_complete_a_study_before_it_falls_silent(self):
        sections = {"completion": {"required_series": [
            {"Modality": "CT", "SeriesDescription": {"regex": "lung"}},
            {"Modality": "CT", "SeriesDescription": {"regex": "mediastin"}}]}}
        n = self.node(sections=sections, stable_seconds=600)
        n.start()
        both = make_study(os.path.join(self.workdir, "both"), [
            dict(slices=2, rows=16, cols=16, series_description="Lung 1mm"),
            dict(slices=2, rows=16, cols=16, series_description="Mediastinum 3mm")])
        one = make_study(os.path.join(self.workdir, "one"), [
            dict(slices=2, rows=16, cols=16, series_description="Lung 1mm")])
        harness.storescu(n.port, [f for st in (both, one) for s in st["series"]
                                  for f in s["files"]], ae_called=n.ae)
        n.wait_for_study(both["study_uid"], state="complete", timeout=10)
        time.sleep(1)
        self.assertEqual(n.studies()[one["study_uid"]]["state"], "receiving")
        self.assertEqual(n.stop(), 0)

    def test_max_wait_seconds_discards_or_processes_what_arrived(self):
        for action, state, jobs in (("discard", "discarded", 0), ("process", "complete", 1)):
            sections = {"models": {"ct-bone-body": {"file": "builtin:ct-bone-body"}},
                        "rules": [{"name": "ct", "match": {"Modality": "CT"},
                                   "run": ["ct-bone-body"]}],
                        "completion": {"max_wait_seconds": 2, "on_max_wait": action}}
            n = self.node(name="node-" + action, sections=sections, stable_seconds=600)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, action), 2, rows=16, cols=16,
                                   pixel_fn=phantom)
            harness.storescu(n.port, files, ae_called=n.ae)
            study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            n.wait_for_study(study, state=state, timeout=10)
            self.assertEqual(len(n.status()["jobs"]), jobs)
            self.assertIn("after max_wait_seconds (2 s)", n.log())
            self.assertEqual(n.stop(), 0)

    def test_a_series_no_rule_matches_is_shown_as_unmatched(self):
        n = self.node(sections=RULES, stable_seconds=1)
        n.start()
        study = self.study()
        harness.storescu(n.port, [f for s in study["series"] for f in s["files"]],
                         ae_called=n.ae)
        head = study["series"][1]["series_uid"]  # CT HEAD, 1 mm: no rule matches it...
        n.wait_for_study(study["study_uid"], state="complete", timeout=10)
        unmatched = n.status()["unmatched_series"]
        # ...except "thin" (1 mm slices): so every series matched something.
        self.assertEqual(unmatched, [])
        sections = dict(RULES, rules=RULES["rules"][:2])
        m = self.node(name="strict", sections=sections, stable_seconds=1)
        m.start()
        harness.storescu(m.port, [f for s in study["series"] for f in s["files"]],
                         ae_called=m.ae)
        m.wait_for_study(study["study_uid"], state="complete", timeout=10)
        self.assertEqual(m.status()["unmatched_series"],
                         [{"study_uid": study["study_uid"], "series_uid": head,
                           "modality": "CT"}])
        self.assertIn(head, m.cli("status", "-c", m.config_path).stdout)
        self.assertEqual(m.stop(), 0)
        self.assertEqual(n.stop(), 0)

    def test_shipped_example_configs_pass_check_config(self):
        examples = sorted(glob.glob(os.path.join(harness.REPO_ROOT, "deploy", "examples",
                                                 "*.yaml")))
        self.assertGreaterEqual(len(examples), 4)
        for path in examples + [os.path.join(harness.REPO_ROOT, "deploy", "ainode.yaml")]:
            r = harness.subprocess.run([self.binary, "check-config", "-c", path],
                                       capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, path + ": " + r.stderr)


if __name__ == "__main__":
    unittest.main()
