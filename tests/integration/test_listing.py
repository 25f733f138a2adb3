#!/usr/bin/python3
"""Integration tests of the listings and the commands around them, against
a running node: `status` and `jobs` page (newest first, a cursor to the
next page) and filter; `reprocess` plans a stored study again and the node
runs what it queued; every command answers --help; `version --json`.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_listing.ListingTest.test_x
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

MODEL = "ct-bone-body"
SECTIONS = {
    "models": {MODEL: {"file": "builtin:" + MODEL},
               # Configured, but no rule sends a series to it.
               "spare": {"file": "builtin:" + MODEL}},
    "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": [MODEL]}],
}
COMMANDS = ["serve", "check-config", "status", "jobs", "reprocess", "reload", "retry",
            "explain", "infer", "audit", "version"]


class ListingTest(NodeTestCase):
    def send_study(self, n, name, modality="CT"):
        """Stores one study of two small slices; returns its Study Instance UID."""
        files = make_ct_series(os.path.join(self.workdir, name), 2, rows=16, cols=16,
                               modality=modality, pixel_fn=phantom)
        harness.storescu(n.port, files, ae_called=n.ae)
        return harness.wait_until(lambda: [uid for uid in n.studies()
                                           if uid not in self.sent], 10, 0.1, name)[0]

    def send(self, n, name, modality="CT"):
        uid = self.send_study(n, name, modality)
        self.sent.append(uid)
        return uid

    def cli(self, n, *args):
        return n.cli(args[0], "-c", n.config_path, *args[1:])

    def json_of(self, n, *args):
        r = self.cli(n, *args, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def pages(self, n, command, *args):
        """Every page of `COMMAND --json ARGS`, following next_cursor."""
        pages, cursor = [], None
        while True:
            doc = self.json_of(n, command, *args, *(("--cursor", cursor) if cursor else ()))
            pages.append(doc)
            cursor = doc["next_cursor"]
            if cursor is None:
                return pages

    def all_done(self, n, count):
        jobs = n.status()["jobs"]
        return len(jobs) == count and all(j["state"] in ("done", "failed") for j in jobs)

    def start_node(self):
        n = self.node(sections=SECTIONS, stable_seconds=1)
        n.start()
        self.sent = []
        return n

    def test_pages_list_every_study_and_job_once_and_filters_keep_what_they_name(self):
        n = self.start_node()
        # Six CT studies (a job each) and six MR ones (no rule: unmatched),
        # alternating, one after the other; the last three after a whole second.
        for i in range(9):
            self.send(n, "s%d" % i, "MR" if i % 2 else "CT")
        # Their jobs are queued as they complete: before the mark, too.
        harness.wait_until(lambda: len(n.status()["jobs"]) == 5, 30, 0.2, "five jobs queued")
        time.sleep(1.1 - time.time() % 1)
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time()))
        for i in range(9, 12):
            self.send(n, "s%d" % i, "MR" if i % 2 else "CT")
        harness.wait_until(lambda: all(s["state"] == "complete" for s in n.studies().values()),
                           30, 0.2, "every study complete")
        harness.wait_until(lambda: self.all_done(n, 6), 120, 0.3, "six jobs ended")
        newest_first = list(reversed(self.sent))
        ct = [uid for i, uid in enumerate(self.sent) if i % 2 == 0]

        # Pages of 5: newest first, each study once; a page's jobs and
        # unmatched series are its studies' own. A study stored after the
        # first page comes before it, never in a later one.
        first = self.json_of(n, "status", "--limit", "5")
        self.assertEqual([s["study_uid"] for s in first["studies"]], newest_first[:5])
        late = self.send_study(n, "late", "MR")
        listed = [s["study_uid"] for s in first["studies"]]
        cursor = first["next_cursor"]
        pages = [first]
        while cursor:
            page = self.json_of(n, "status", "--limit", "5", "--cursor", cursor)
            pages.append(page)
            listed += [s["study_uid"] for s in page["studies"]]
            cursor = page["next_cursor"]
        self.assertEqual(listed, newest_first)
        self.assertEqual([len(p["studies"]) for p in pages], [5, 5, 2])
        for p in pages:
            mine = {s["study_uid"] for s in p["studies"]}
            self.assertTrue(all(j["study_uid"] in mine for j in p["jobs"]), p)
            self.assertEqual(len(p["jobs"]), len(mine & set(ct)), p)
            self.assertEqual({u["study_uid"] for u in p["unmatched_series"]}, mine - set(ct))
        self.assertEqual(self.json_of(n, "status")["studies"][0]["study_uid"], late)

        # The table says how to get the next page.
        r = self.cli(n, "status", "--limit", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("4 studies\n", r.stdout)
        cursor = re.search(r"^more: the next page with --cursor (\S+)$", r.stdout, re.M)
        self.assertIsNotNone(cursor, r.stdout)
        r = self.cli(n, "status", "--limit", "4", "--cursor", cursor.group(1))
        self.assertIn(newest_first[3], r.stdout)  # the 5th newest, after "late"
        self.assertNotIn(late, r.stdout)

        # Filters, each over every page.
        def studies(*args):
            return [s["study_uid"] for p in self.pages(n, "status", "--limit", "2", *args)
                    for s in p["studies"]]
        self.assertEqual(studies("--model", MODEL), list(reversed(ct)))
        self.assertEqual(studies("--model", "spare"), [])
        self.assertEqual(studies("--since", since), [late] + newest_first[:3])
        self.assertEqual(studies("--study", ct[2]), [ct[2]])
        self.assertEqual(studies("--state", "receiving"), [])
        self.assertEqual(studies("--oldest-first"), self.sent + [late])
        every = self.json_of(n, "status", "--all")
        self.assertEqual([s["study_uid"] for s in every["studies"]], [late] + newest_first)
        self.assertIsNone(every["next_cursor"])

        # Jobs: pages of 4, newest first, each once.
        jobs = [j for p in self.pages(n, "jobs", "--limit", "4") for j in p["jobs"]]
        self.assertEqual(len(jobs), 6)
        self.assertEqual([j["study_uid"] for j in jobs], list(reversed(ct)))
        self.assertEqual([j["id"] for j in jobs], sorted((j["id"] for j in jobs), reverse=True))
        done = [j for p in self.pages(n, "jobs", "--state", "done") for j in p["jobs"]]
        self.assertEqual(len(done), 6, jobs)
        self.assertEqual(self.pages(n, "jobs", "--state", "queued")[0]["jobs"], [])
        one = self.json_of(n, "jobs", "--study", ct[1])["jobs"]
        self.assertEqual([j["study_uid"] for j in one], [ct[1]])
        self.assertEqual(len(self.json_of(n, "jobs", "--model", MODEL)["jobs"]), 6)
        self.assertEqual(self.json_of(n, "jobs", "--model", "spare")["jobs"], [])
        self.assertEqual([j["study_uid"] for j in self.json_of(n, "jobs", "--since", since)
                          ["jobs"]], [ct[-1]])
        r = self.cli(n, "jobs", "--limit", "5")
        self.assertIn("5 jobs\n", r.stdout)
        self.assertIn("more: the next page with --cursor ", r.stdout)
        self.assertIn(ct[-1], r.stdout)

        # What cannot be used is a usage error, named.
        status_cursor = self.json_of(n, "status", "--limit", "1")["next_cursor"]
        for args, says in [
                (("status", "--limit", "0"), "--limit"),
                (("status", "--limit", "10001"), "--limit"),
                (("jobs", "--limit", "many"), "--limit"),
                (("status", "--state", "done"), "unknown state 'done'"),
                (("jobs", "--state", "complete"), "unknown state 'complete'"),
                (("status", "--cursor", "garbage"), "not a cursor"),
                (("jobs", "--cursor", status_cursor), "not a cursor"),
                (("status", "--cursor", status_cursor, "--oldest-first"), "not a cursor"),
                (("status", "--all", "--limit", "5"), "--all"),
                (("status", "--study", "not-a-uid"), "--study"),
                (("status", "--since", "yesterday"), "--since"),
                (("audit", "--limit", "5"), "only apply to status and jobs")]:
            r = self.cli(n, *args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(says, r.stderr, args)
        self.assertEqual(n.stop(), 0)

    def test_reprocess_queues_the_study_again_and_the_running_node_runs_it(self):
        n = self.start_node()
        study = self.send(n, "ct")
        mr = self.send(n, "mr", "MR")
        harness.wait_until(lambda: self.all_done(n, 1), 60, 0.2, "the first job")

        r = self.cli(n, "reprocess", study)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "1 job queued\n")
        jobs = harness.wait_until(lambda: self.all_done(n, 2) and n.status()["jobs"], 60, 0.2,
                                  "the job queued again, run by the node")
        self.assertEqual([j["state"] for j in jobs], ["done", "done"], jobs)
        self.assertEqual({j["study_uid"] for j in jobs}, {study})
        self.assertEqual(jobs[0]["labels"], jobs[1]["labels"])
        self.assertNotEqual(jobs[0]["result"], jobs[1]["result"])

        r = self.cli(n, "reprocess", study, "--model", MODEL)
        self.assertEqual((r.returncode, r.stdout), (0, "1 job queued\n"), r.stderr)
        harness.wait_until(lambda: self.all_done(n, 3), 60, 0.2, "the third job")

        # Each failure has its own exit code and says what is wrong.
        for args, code, says in [
                ((study, "--model", "nosuch"), 4, "no model 'nosuch'"),
                (("1.2.3.4",), 3, "no study 1.2.3.4"),
                ((study, "--model", "spare"), 5, "send no series of the study to model spare"),
                ((mr,), 5, "run no model on any series of the study"),
                (("not-a-uid",), 2, "not a Study Instance UID"),
                ((), 2, "one study UID")]:
            r = self.cli(n, "reprocess", *args)
            self.assertEqual(r.returncode, code, (args, r.stdout, r.stderr))
            self.assertIn(says, r.stderr, args)
        time.sleep(1.5)  # nothing was queued by them
        self.assertEqual(len(n.status()["jobs"]), 3)
        self.assertEqual(n.stop(), 0)

    def test_listings_refuse_a_store_their_user_may_not_read(self):
        """status, jobs and audit run by a user who may not look into the
        data directory say so and fail: an empty listing would tell the
        admin that nothing was ever stored."""
        n = self.start_node()
        self.send(n, "a")
        self.assertEqual(n.stop(), 0)
        # What an unprivileged user can reach: a copy of the binary and of
        # the configuration in a directory open to all; the data directory
        # stays the node's alone (0750, root's).
        shared = tempfile.mkdtemp(prefix="ainode-perm-")
        self.addCleanup(shutil.rmtree, shared, True)
        os.chmod(shared, 0o755)
        binary = os.path.join(shared, "ainode")
        shutil.copy(n.binary, binary)
        # (The node section alone: the copy finds no built-in model.)
        config = os.path.join(shared, "ainode.yaml")
        harness.write_config(config, harness.to_yaml({"node": n.config["node"]}))
        os.chmod(config, 0o644)
        os.chmod(n.workdir, 0o755)
        os.chmod(n.data_dir, 0o750)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary]
        harness.require_tool("setpriv")
        for args in (["status"], ["jobs"], ["audit"], ["status", "--json"]):
            r = subprocess.run(nobody + [args[0], "-c", config] + args[1:],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, (args, r.stdout, r.stderr))
            self.assertEqual(r.stdout, "", args)
            self.assertIn("cannot read %s: Permission denied" % n.db_path, r.stderr, args)
            self.assertIn("sudo -u ainode", r.stderr, args)
        # The node's own user still reads it.
        r = subprocess.run([binary, "status", "-c", config], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("\n1 study\n", r.stdout)

    def test_every_command_prints_its_usage_with_help(self):
        for cmd in COMMANDS:
            r = subprocess.run([self.binary, cmd, "--help"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, (cmd, r.stderr))
            self.assertTrue(r.stdout.startswith("usage: ainode %s" % cmd), r.stdout)
            self.assertIn("exit codes: 0 ok, 1 error, 2 usage", r.stdout, cmd)
        r = subprocess.run([self.binary, "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)
        for cmd in COMMANDS:
            self.assertIn("\n  %s " % cmd, r.stdout)
        self.assertIn("exit codes: 0 ok, 1 error, 2 usage; 3 ", r.stdout)
        r = subprocess.run([self.binary, "status", "--bogus"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: ainode status", r.stderr)

    def test_version_json_names_the_build_and_what_it_runs_with(self):
        r = subprocess.run([self.binary, "version", "--json"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        v = json.loads(r.stdout)
        plain = subprocess.run([self.binary, "version"], capture_output=True, text=True,
                               timeout=60).stdout
        self.assertEqual(plain, "ainode %s\n" % v["version"])
        self.assertTrue(v["build"]["type"] and v["build"]["compiler"] and v["build"]["git"], v)
        # The DCMTK the tools on this machine are: the one ainode was built with.
        tool = subprocess.run([harness.require_tool("storescu"), "--version"],
                              capture_output=True, text=True, timeout=60).stdout
        self.assertIn("v%s " % v["dcmtk"], tool)
        self.assertRegex(v["libtorch"], r"^\d+\.\d+\.\d+")
        cuda = v["cuda"]
        self.assertIsInstance(cuda["available"], bool)
        self.assertEqual(cuda["device_count"], len(cuda["devices"]))
        if not cuda["available"]:
            self.assertEqual(cuda["device_count"], 0)
        for i, d in enumerate(cuda["devices"]):
            self.assertEqual(d["index"], i)
        r = subprocess.run([self.binary, "version", "--bogus"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
