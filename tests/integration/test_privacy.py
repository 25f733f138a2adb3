#!/usr/bin/python3
"""Integration test of the log's privacy rule: at the default level no line
names a patient, a UID or a path under DATA_DIR/instances or results, on
any path a study takes (see docs/architecture.md, "Logs").

A node runs through a whole life (storescu, completion, the built-in model,
results sent to storescp, an integrity refusal, a destination that is down,
a job that fails, a study held for instances refused below the free-space
floor, a repair after kill -9, retention) and its log is searched
for every identifier of every study, series, instance and result. The same
life at debug shows them: the search finds what it looks for.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_privacy.PrivacyTest.test_x
"""

import os
import secrets
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawscu  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

import pydicom  # noqa: E402

# Standard UIDs (SOP classes, transfer syntaxes, coding schemes) name no one.
STANDARD_ROOT = "1.2.840.10008."


def uids_of(path):
    """Every UID value in the data set of PATH (nested ones too), standard
    ones and the writer's implementation UID aside."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = set()

    def visit(d):
        for e in d:
            if e.VR == "SQ":
                for item in e.value:
                    visit(item)
            elif e.VR == "UI" and e.value:
                for v in (e.value if e.VM > 1 else [e.value]):
                    v = str(v)
                    if not v.startswith(STANDARD_ROOT):
                        found.add(v)
    visit(ds)
    return found


class PrivacyTest(NodeTestCase):
    def reload(self, n, **node):
        n.config["node"].update(node)
        n.write_raw_config(n.config_text())
        count = n.log().count("reloaded:")
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: n.log().count("reloaded:") > count, 10, 0.05, "the reload")

    def life(self, log_level):
        """Runs a node at LOG_LEVEL through a whole life; returns its log
        and {identifier: what it is}."""
        tag = secrets.token_hex(4).upper()
        patient = {"patient_name": "Privacy^Zelda%s" % tag, "patient_id": "PID%s" % tag,
                   "accession_number": "ACC%s" % tag}
        secret = {patient["patient_name"]: "PatientName", patient["patient_id"]: "PatientID",
                  patient["accession_number"]: "AccessionNumber"}
        pacs = harness.StoreSCP(os.path.join(self.workdir, "pacs"))
        pacs.start()
        try:
            sections = {
                "destinations": {
                    "pacs": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": pacs.port},
                    # Nothing listens there: transient failures, then dead-lettered.
                    "down": {"ae_title": "DOWN", "host": "127.0.0.1",
                             "port": harness.free_port(), "retry_initial_seconds": 1,
                             "max_attempts": 2},
                },
                "models": {"ct-bone-body": {"file": "builtin:ct-bone-body", "threads": 1}},
                "rules": [
                    {"name": "ct", "match": {"Modality": "CT", "BodyPartExamined": "CHEST"},
                     "run": ["ct-bone-body"],
                     "send_results_to": ["pacs"]},
                    {"name": "mr", "match": {"Modality": "MR"}, "forward_to": ["down"]},
                ],
            }
            n = self.node(sections=sections, stable_seconds=1, network_timeout_seconds=5,
                          log_level=log_level)
            secret[os.path.join(n.data_dir, "instances")] = "a path under instances/"
            secret[os.path.join(n.data_dir, "results")] = "a path under results/"
            n.start()

            # A CT study the model labels and whose results go to the PACS;
            # an MR study forwarded to a destination that is down; a CT
            # series whose geometry fails its job.
            ct = make_ct_series(os.path.join(self.workdir, "ct"), 6, rows=32, cols=40,
                                pixel_fn=phantom, **patient)
            mr = make_ct_series(os.path.join(self.workdir, "mr"), 2, rows=16, cols=16,
                                modality="MR", **patient)
            bad = make_ct_series(os.path.join(self.workdir, "bad"), 2, rows=2, cols=2,
                                 pixel_spacing=(1e6, 1e6), **patient)
            r = harness.storescu(n.port, ct + mr + bad, ae_called=n.ae)
            self.assertTrue(harness.all_stores_succeeded(r.stdout, 10), r.stdout)
            for f in ct + mr + bad:
                for u in uids_of(f):
                    secret[u] = "a UID of the studies sent"

            def ended():
                s = n.status()
                jobs, items = s["jobs"], s["outbox"]
                done = (len(jobs) == 2 and all(j["state"] in ("done", "failed") for j in jobs)
                        and len(items) == 4
                        and all(i["state"] in ("sent", "failed") for i in items))
                return s if done else None
            s = harness.wait_until(ended, 120, 0.2, "the jobs and sends to end")
            self.assertEqual(sorted(j["state"] for j in s["jobs"]), ["done", "failed"], s)
            failed = [j for j in s["jobs"] if j["state"] == "failed"][0]
            self.assertIn("instance 1 (of 2): ", failed["error"])
            self.assertEqual(sorted((i["destination"], i["state"]) for i in s["outbox"]),
                             [("down", "failed")] * 2 + [("pacs", "sent")] * 2, s)
            for p in harness.list_files(pacs.out_dir):
                for u in uids_of(p):
                    secret[u] = "a UID of a result"

            # An instance sent again under another study: refused.
            ds = pydicom.dcmread(ct[0])
            ds.StudyInstanceUID = pydicom.uid.generate_uid()
            secret[str(ds.StudyInstanceUID)] = "the UID of a refused study"
            moved = os.path.join(self.workdir, "moved.dcm")
            ds.save_as(moved, write_like_original=True)
            r = harness.storescu(n.port, moved, ae_called=n.ae, check=False)
            self.assertEqual(harness.storescu_statuses(r.stdout), ["Error: CannotUnderstand"],
                             r.stdout)

            # An instance refused below the free-space floor: its study is
            # held until it is sent again on an association with none refused.
            held = make_ct_series(os.path.join(self.workdir, "held"), 2, rows=16, cols=16,
                                  body_part="HEAD", **patient)
            for f in held:
                for u in uids_of(f):
                    secret[u] = "a UID of the held study"
            raw = [harness.dataset_bytes(f) for f in held]
            sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                    for f in held]
            a = rawscu.Association(n.port, called=n.ae, calling="MODALITY")
            try:
                self.assertEqual(a.store(rawscu.CT_STORAGE, sops[0], raw[0]), 0)
                self.reload(n, min_free_disk_mb=1 << 30)
                self.assertEqual(a.store(rawscu.CT_STORAGE, sops[1], raw[1]), 0xA700)
                self.assertTrue(a.release())
            finally:
                a.close()
            self.reload(n, min_free_disk_mb=0)
            harness.storescu(n.port, held, ae_called=n.ae)
            n.wait_for_study(str(pydicom.dcmread(held[0], stop_before_pixels=True)
                                 .StudyInstanceUID), state="complete", timeout=30)

            # Killed, with a file left under instances/ that is not an
            # instance; restarted with retention on: the repair removes the
            # file and retention deletes the finished studies.
            study_dir = os.path.join(n.data_dir, "instances", str(ds.StudyInstanceUID))
            n.kill9()
            ct_ds = pydicom.dcmread(ct[0], stop_before_pixels=True)
            leftover_uid = pydicom.uid.generate_uid()
            secret[leftover_uid] = "the UID in a leftover file's name"
            leftover = os.path.join(n.data_dir, "instances", str(ct_ds.StudyInstanceUID),
                                    str(ct_ds.SeriesInstanceUID), leftover_uid + ".dcm")
            with open(leftover, "wb") as f:
                f.write(b"half an instance")
            self.assertFalse(os.path.exists(study_dir))
            n.config["node"]["disk_high_water_percent"] = 1
            n.write_raw_config(n.config_text())
            n.start()
            harness.wait_until(lambda: "retention: 3 studies deleted" in n.log(), 30, 0.2,
                               "retention")
            self.assertFalse(os.path.exists(leftover))
            self.assertEqual(len(n.studies()), 1)  # the MR one: its sends failed
            self.assertEqual(n.stop(), 0)
        finally:
            pacs.stop()
        log = n.log()
        # Every path above was taken, and said so.
        for line in (r"event=study.complete study=\d+ ", r"event=job.done job=\d+ ",
                     r'event=job.failed job=\d+ .*msg="failed: ',
                     "sent 2 results to pacs",
                     "refused an instance from STORESCU: [A-Za-z]+ already stored in another "
                     "study", r'event=send.retry item=\d+ dest=down msg="forward failed, next '
                     "try in", "failed for good after 2 attempts",
                     r"event=study.held study=\d+ msg=\"held back from completion",
                     r"event=study.released study=\d+ msg=\"held back for refused instances",
                     "event=repair.removed", "1 incomplete one removed",
                     "retention: 3 studies deleted"):
            self.assertRegex(log, line)
        self.assertGreater(len(secret), 20)
        return log, secret

    def test_the_log_names_no_patient_uid_or_stored_path_at_the_default_level(self):
        log, secret = self.life("info")
        found = ["%s (%s)" % (v, what) for v, what in sorted(secret.items()) if v in log]
        self.assertEqual(found, [], "identifiers in the log at the default level:\n" + log)

    def test_at_debug_the_same_life_logs_uids_and_paths(self):
        log, secret = self.life("debug")
        found = {what for v, what in secret.items() if v in log}
        # What the search looks for is there when the level allows it.
        self.assertIn("a UID of the studies sent", found)
        self.assertIn("a path under instances/", found)


if __name__ == "__main__":
    unittest.main()
