#!/usr/bin/python3
"""Integration tests of the rules as the admin sees them: `ainode explain`
on a stored study and on files, and check-config on the shipped examples.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_rules.RulesTest.test_x
"""

import glob
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_study  # noqa: E402
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

    def test_explain_of_an_unknown_study_is_an_error(self):
        n = self.node(sections=RULES)
        n.start()
        r = n.cli("explain", "-c", n.config_path, "1.2.3.4")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no study 1.2.3.4", r.stderr)
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
