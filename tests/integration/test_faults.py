#!/usr/bin/python3
"""The fault suite: the node killed with SIGKILL at every crash point and at
random moments, then restarted, and destinations that misbehave; nothing
acknowledged or computed may be lost, nothing sent twice under two names.

Crash points (common/crashpoint.h) are compiled only into the test
executable ainode-faults, built next to ainode (build/ainode-faults; the
ctest passes its path as AINODE_FAULTS_BINARY, else it is looked for next to
AINODE_BINARY; a missing one fails the suite). AINODE_CRASH_AT=NAME[:N] in
its environment kills it at the N-th pass (default first) of that point.

For each point: a fresh node (a model rule whose results go to a storescp
"PACS", and a forward of the originals to an "archive"), a 6-slice CT study
sent with storescu, the node killed at the point, restarted without it, the
instances storescu saw no answer for sent again; then every acknowledged
instance must be stored byte for byte, the study complete, its SEG and SR at
the PACS under one SOP Instance UID each (the same instance arriving twice is
a re-send, allowed; two UIDs are a duplicate, a failure), valid for
dciodvfy, every original at the archive, no job or outbox item left
unfinished. Then a few kills at random moments (the seed is printed: rerun
with AINODE_FAULTS_SEED=N), and destinations that refuse, abort, stall past
the network timeout, answer a failure status or do not listen: every item
ends delivered or dead-lettered, and `ainode retry` delivers the
dead-lettered ones once the destination is healthy. When tests/integration/
attacks.py exists, its attacks run against the shipped binary too.

The suite ends with one line:
    fault suite: kills survived 30/30, instances acknowledged ... crashes 0

Run it:
    ctest --test-dir build -R faults -V
    cd tests/integration && AINODE_BINARY=../../build/ainode \\
        /usr/bin/python3 -m unittest test_faults -v

While debugging some points, AINODE_FAULTS_ONLY=NAME,NAME... runs only those
(and still the random kills, destinations and attacks).

Add a crash point: put CRASH_POINT("stage.moment") in a C file of storage/ or
service/ where a crash is dangerous, and its name in CRASH_POINTS below (with
the scenario it needs, if any); the suite fails when a listed point is never
reached.
"""

import os
import random
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import phantom  # noqa: E402
from test_receiver import NodeTestCase, db_rows  # noqa: E402
from test_results import SEG_CLASS, SR_CLASS, dciodvfy_errors  # noqa: E402

import pydicom  # noqa: E402

SLICES = 6

# Every crash point, in the order a study meets them. "NAME:N" is the N-th
# pass. A point with "pacs_down" is met only when a send fails: its PACS
# starts after the restart.
CRASH_POINTS = [
    ("ingest.temp_created", {}),
    ("ingest.received", {}),
    ("ingest.linked", {}),
    ("ingest.flushed", {}),
    ("ingest.flushed:4", {}),
    ("ingest.before_commit", {}),
    ("ingest.indexed", {}),
    ("ingest.acknowledging", {}),
    ("ingest.acknowledging:6", {}),
    # The sender sends the unanswered instance again only once the study was
    # completed and its results sent: the same bytes change nothing.
    ("ingest.acknowledging:6", {"resend_late": True}),
    ("complete.before_commit", {}),
    ("complete.committed", {}),
    ("job.claimed", {}),
    ("inference.started", {}),
    ("inference.model", {}),
    ("inference.done", {}),
    ("results.seg_written", {}),
    ("results.sr_written", {}),
    ("results.files_written", {}),
    ("results.before_commit", {}),
    ("results.committed", {}),
    ("forward.before_association", {}),
    ("forward.sent", {}),
    ("forward.marked", {}),
    ("forward.marked:3", {}),
    ("send.before_association", {}),
    ("send.accepted", {}),
    ("send.marked", {}),
    ("outbox.marked_sent", {}),
    ("outbox.failure_recorded", {"pacs_down": True}),
]

RANDOM_KILLS = 3


def faults_binary():
    """$AINODE_FAULTS_BINARY, else ainode-faults next to the node binary."""
    return os.environ.get("AINODE_FAULTS_BINARY") or os.path.join(
        os.path.dirname(os.path.abspath(harness.default_binary())), "ainode-faults")


class Tally:
    """What the summary line reports."""

    def __init__(self):
        self.kills = 0
        self.survived = 0
        self.acknowledged = 0
        self.present = 0
        self.results_expected = 0
        self.results_delivered = 0
        self.duplicates = 0
        self.resent = 0
        self.attacks = 0
        self.crashes = 0

    def line(self):
        return ("fault suite: kills survived %d/%d, instances acknowledged %d present %d, "
                "results expected %d delivered %d, duplicates %d (same SOP Instance re-sent %d), "
                "attacks tried %d, crashes %d"
                % (self.survived, self.kills, self.acknowledged, self.present,
                   self.results_expected, self.results_delivered, self.duplicates, self.resent,
                   self.attacks, self.crashes))


def received(dirs):
    """{(study, SOP class): {SOP Instance UID: copies}} of the files in DIRS."""
    out = {}
    for d in dirs:
        for p in harness.list_files(d):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            key = (str(ds.StudyInstanceUID), str(ds.SOPClassUID))
            uids = out.setdefault(key, {})
            uids.setdefault(str(ds.SOPInstanceUID), []).append(p)
    return out


def listening(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((harness.LOOPBACK, port)) == 0


class FaultsTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.tally = Tally()
        self.faults = faults_binary()
        # Fails, never skips: the suite is part of the test command.
        self.assertTrue(os.access(self.faults, os.X_OK),
                        "%s is missing: build the target ainode-faults" % self.faults)
        self.runs = 0

    # -- the node and its peers ------------------------------------------------
    def sections(self, pacs_ports, archive_port=None, **dest):
        dests = {}
        for name, port in pacs_ports.items():
            d = {"ae_title": "STORESCP", "host": "127.0.0.1", "port": port,
                 "retry_initial_seconds": 1, "retry_factor": 2, "retry_max_seconds": 2}
            d.update(dest)
            dests[name] = d
        rule = {"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"],
                "send_results_to": sorted(pacs_ports)}
        if archive_port:
            dests["archive"] = {"ae_title": "ARCHIVE", "host": "127.0.0.1",
                                "port": archive_port, "retry_initial_seconds": 1,
                                "retry_factor": 2, "retry_max_seconds": 2}
            rule["forward_to"] = ["archive"]
        return {
            "destinations": dests,
            "models": {"ct-bone-body": {"file": "builtin:ct-bone-body", "threads": 1}},
            "rules": [rule],
        }

    def new_node(self, binary, sections, crash_at=None):
        self.runs += 1
        env = dict(os.environ)
        env.pop("AINODE_CRASH_AT", None)
        if crash_at:
            env["AINODE_CRASH_AT"] = crash_at
        n = harness.Node(binary, os.path.join(self.workdir, "node%02d" % self.runs),
                         sections=sections, env=env, stable_seconds=1,
                         network_timeout_seconds=2, log_level="debug")
        self.nodes.append(n)
        return n

    def clear_crash_point(self, n):
        n.env = {k: v for k, v in n.env.items() if k != "AINODE_CRASH_AT"}

    def study(self, name):
        return make_ct_series(os.path.join(self.workdir, name), SLICES, rows=40, cols=48,
                              pixel_fn=phantom, seed=self.runs)

    def acknowledged(self, output):
        return {f for f, s in harness.storescu_file_statuses(output).items() if s == "Success"}

    # -- after the restart -----------------------------------------------------
    def settle(self, n, study_uid, n_results, n_forwards, timeout=90):
        """Waits until STUDY_UID is complete with all its instances, every job
        ended and the outbox holds N_RESULTS result items and N_FORWARDS
        forwards, none pending; returns the status."""
        # Polled in the database (read-only): `ainode status` loads the
        # whole binary each time, too slow to poll with on two cores. What
        # is asserted is then read once with status.
        def check():
            if not n.running():
                return "died"
            state = db_rows(n, "SELECT state FROM studies WHERE study_uid=?", (study_uid,))
            count = db_rows(n, "SELECT count(*) FROM instances JOIN series USING(series_uid)"
                               " WHERE study_uid=?", (study_uid,))
            if state != [("complete",)] or count != [(SLICES,)]:
                return None
            if db_rows(n, "SELECT 1 FROM jobs WHERE state IN ('queued', 'running')"):
                return None
            items = db_rows(n, "SELECT kind, state FROM outbox WHERE study_uid=?", (study_uid,))
            if sum(k != "forward" for k, _ in items) < n_results or \
                    sum(k == "forward" for k, _ in items) < n_forwards:
                return None
            return all(state != "pending" for _, state in items)
        if harness.wait_until(check, timeout, 0.1, "study %s settled" % study_uid) == "died":
            self.tally.crashes += 1
            self.fail("the node died by itself (exit %s):\n%s" % (n.wait(), n.log_tail()))
        return n.status()

    def check_study(self, n, files, acked, st, pacs_dirs, archive_dirs):
        """The assertions every kill ends with."""
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        # Every acknowledged instance stored, its data set byte for byte.
        present = 0
        for f in sorted(acked):
            sop = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            rows = db_rows(n, "SELECT path FROM instances WHERE sop_instance_uid=?", (sop,))
            if rows and os.path.exists(rows[0][0]) and \
                    harness.dataset_bytes(rows[0][0]) == harness.dataset_bytes(f):
                present += 1
        self.tally.acknowledged += len(acked)
        self.tally.present += present
        # SEG and SR at the PACS: one SOP Instance each (counted before any
        # assertion, for the summary).
        items = [i for i in st["outbox"] if i["study_uid"] == study_uid]
        got = received(pacs_dirs)
        results = []
        for cls, kind in ((SEG_CLASS, "seg"), (SR_CLASS, "sr")):
            self.tally.results_expected += 1
            uids = got.get((study_uid, cls), {})
            if len(uids) >= 1:
                self.tally.results_delivered += 1
            self.tally.duplicates += max(0, len(uids) - 1)
            self.tally.resent += sum(len(c) - 1 for c in uids.values())
            results.append((kind, uids))
        self.assertEqual(present, len(acked), "acknowledged instances lost or altered")
        self.assert_store_clean(n)
        for kind, uids in results:
            self.assertEqual(len(uids), 1, "%s delivered under %d UIDs: %s"
                             % (kind, len(uids), sorted(uids)))
            want = {i["sop_instance_uid"] for i in items if i["kind"] == kind}
            self.assertEqual(set(uids), want, "%s at the PACS is not the outbox's" % kind)
            for copies in uids.values():
                self.assertEqual(dciodvfy_errors(copies[0]), [])
        # No stuck or abandoned job, no item left pending.
        jobs = [j for j in st["jobs"] if j["study_uid"] == study_uid]
        self.assertEqual([j["state"] for j in jobs], ["done"], jobs)
        self.assertTrue(all(i["state"] == "sent" for i in items), items)
        # Every original at the archive, as it was sent.
        if archive_dirs is not None:
            fwd = received(archive_dirs).get((study_uid, "1.2.840.10008.5.1.4.1.1.2"), {})
            self.tally.resent += sum(len(c) - 1 for c in fwd.values())
            for f in files:
                sop = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                self.assertIn(sop, fwd, "a forwarded instance is missing")
                self.assertEqual(harness.dataset_bytes(fwd[sop][0]), harness.dataset_bytes(f))

    def restart_and_resend(self, n, files, acked, started=False):
        """Starts N again and sends what storescu saw no answer for, as a
        sender would, within stable_seconds of the start (2 s: room for a
        loaded machine; the kill run waits 1 s to reach the later points
        sooner)."""
        if not started:
            n.config["node"]["stable_seconds"] = 2
            harness.write_config(n.config_path, n.config_text())
            n.start()
        rest = [f for f in files if f not in acked]
        if rest:
            r = harness.storescu(n.port, rest, ae_called=n.ae, check=False, timeout=60)
            now = self.acknowledged(r.stdout)
            self.assertEqual(now, set(rest), "resend refused:\n" + r.stdout[-3000:])
            acked |= now
        return acked

    def stop_cleanly(self, n):
        rc = n.stop()
        if rc != 0:
            self.tally.crashes += 1
        self.assertEqual(rc, 0, "the node did not stop cleanly:\n" + n.log_tail())

    # -- the kills -------------------------------------------------------------
    def kill_at_point(self, point, opts, pacs, archive):
        pacs_dirs = [pacs.out_dir]
        late = None
        ports = {"pacs": pacs.port}
        if opts.get("pacs_down"):
            late = harness.StoreSCP(os.path.join(self.workdir, "late%02d" % self.runs),
                                    extra=["+uf"])
            ports = {"pacs": late.port}
            pacs_dirs = [late.out_dir]
        n = self.new_node(self.faults, self.sections(ports, archive.port), crash_at=point)
        try:
            n.start()
            files = self.study("study%02d" % self.runs)
            r = harness.storescu(n.port, files, ae_called=n.ae, check=False, timeout=60)
            acked = self.acknowledged(r.stdout)
            self.tally.kills += 1
            try:
                rc = n.wait(60)
            except subprocess.TimeoutExpired:
                n.kill9()
                self.fail("crash point %s was never reached" % point)
            name = point.split(":")[0]
            if rc != -9 or ("crash point %s reached" % name) not in n.log():
                self.tally.crashes += 1
                self.fail("the node died with %s, not at crash point %s:\n%s"
                          % (rc, point, n.log_tail()))
            self.clear_crash_point(n)
            if late:
                late.start()
            study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            if opts.get("resend_late"):
                n.start()
                self.settle(n, study_uid, 2, SLICES)
                acked = self.restart_and_resend(n, files, acked, started=True)
                time.sleep(2.5)  # past stable_seconds: a reopened study would be planned
            else:
                acked = self.restart_and_resend(n, files, acked)
            st = self.settle(n, study_uid, 2, SLICES)
            self.check_study(n, files, acked, st, pacs_dirs, [archive.out_dir])
            self.stop_cleanly(n)
            self.tally.survived += 1
        finally:
            if late:
                late.stop()

    def random_kill(self, rnd, i, pacs, archive):
        """The shipped binary killed at a random moment of ingest or inference."""
        n = self.new_node(self.binary, self.sections({"pacs": pacs.port}, archive.port))
        n.start()
        files = self.study("random%02d" % i)
        delay = rnd.uniform(0.05, 4.0)
        cmd = ["storescu", "-v", "-aet", "STORESCU", "-aec", n.ae, "127.0.0.1", str(n.port)]
        p = subprocess.Popen(cmd + files, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=harness.dcmtk_env())
        time.sleep(delay)
        self.tally.kills += 1
        if not n.running():
            self.tally.crashes += 1
            self.fail("the node died by itself:\n" + n.log_tail())
        n.kill9()
        out, _ = p.communicate(timeout=60)
        acked = self.acknowledged(out)
        acked = self.restart_and_resend(n, files, acked)
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        st = self.settle(n, study_uid, 2, SLICES)
        self.check_study(n, files, acked, st, [pacs.out_dir], [archive.out_dir])
        self.stop_cleanly(n)
        self.tally.survived += 1

    # -- destinations that misbehave ---------------------------------------------
    def faulty_destinations(self):
        """Each destination misbehaves in its own way; every item ends sent or
        dead-lettered, and once each is healthy, `retry` delivers the rest."""
        root = os.path.join(self.workdir, "faulty")
        kinds = {
            "refuse": ["--refuse"],
            "abort_after": ["--abort-after"],
            "abort_during": ["--abort-during"],
            "sleep_after": ["--sleep-after", "3"],
            "sleep_during": ["--sleep-during", "3"],
            "status_a700": [],        # its output folder is a file: 0xA700
            "closed": None,           # nothing listens
        }
        scps, ports = {}, {}
        for name, extra in kinds.items():
            out = os.path.join(root, name)
            scp = harness.StoreSCP(out + "-bad", extra=["+uf"] + (extra or []))
            ports[name] = scp.port
            if extra is not None:
                # A refusing or stalling storescp answers no C-ECHO: wait
                # for its port instead.
                scp.start(wait=False)
                harness.wait_until(lambda: listening(scp.port), 20, 0.05,
                                   "storescp %s listening" % name)
                if name == "status_a700":
                    os.rmdir(scp.out_dir)
                    with open(scp.out_dir, "w") as f:
                        f.write("not a directory")
            scps[name] = scp
        n = self.new_node(self.binary, self.sections(ports, max_attempts=2))
        n.start()
        files = self.study("faulty")
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        r = harness.storescu(n.port, files, ae_called=n.ae)
        acked = self.acknowledged(r.stdout)
        self.assertEqual(len(acked), SLICES, r.stdout)

        def ended():
            items = db_rows(n, "SELECT state FROM outbox WHERE study_uid=?", (study_uid,))
            return len(items) == 2 * len(kinds) and all(i != ("pending",) for i in items)
        harness.wait_until(ended, 120, 0.2, "every item sent or dead-lettered")
        items = [i for i in n.status()["outbox"] if i["study_uid"] == study_uid]
        failed = {i["destination"] for i in items if i["state"] == "failed"}
        self.assertTrue(failed, items)
        # Healthy again, each on its own port; then the dead-lettered are retried.
        good_dirs = {}
        for name, scp in scps.items():
            if scp.running():
                scp.stop()
            good = harness.StoreSCP(os.path.join(root, name), port=ports[name], extra=["+uf"])
            good.start()
            scps[name] = good
            good_dirs[name] = [good.out_dir] + ([scp.out_dir] if os.path.isdir(scp.out_dir)
                                                 else [])
        try:
            r = n.cli("retry", "-c", n.config_path, "--all-failed")
            self.assertEqual(r.returncode, 0, r.stderr)
            st = self.settle(n, study_uid, 2 * len(kinds), 0)
            self.check_instances_and_jobs(n, files, acked, st, study_uid)
            for name, dirs in good_dirs.items():
                got = received(dirs)
                mine = [i for i in st["outbox"] if i["study_uid"] == study_uid and
                        i["destination"] == name]
                for cls, kind in ((SEG_CLASS, "seg"), (SR_CLASS, "sr")):
                    self.tally.results_expected += 1
                    uids = got.get((study_uid, cls), {})
                    want = {i["sop_instance_uid"] for i in mine if i["kind"] == kind}
                    if uids:
                        self.tally.results_delivered += 1
                    self.tally.duplicates += max(0, len(uids) - 1)
                    self.tally.resent += sum(len(c) - 1 for c in uids.values())
                    self.assertEqual(len(want), 1, mine)
                    self.assertEqual(set(uids), want, "%s at %s" % (kind, name))
            self.stop_cleanly(n)
        finally:
            for scp in scps.values():
                scp.stop()

    def check_instances_and_jobs(self, n, files, acked, st, study_uid):
        present = 0
        for f in acked:
            sop = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            rows = db_rows(n, "SELECT path FROM instances WHERE sop_instance_uid=?", (sop,))
            if rows and harness.dataset_bytes(rows[0][0]) == harness.dataset_bytes(f):
                present += 1
        self.tally.acknowledged += len(acked)
        self.tally.present += present
        self.assertEqual(present, len(acked))
        jobs = [j for j in st["jobs"] if j["study_uid"] == study_uid]
        self.assertEqual([j["state"] for j in jobs], ["done"], jobs)

    # -- attacks (tests/integration/attacks.py, when present) ------------------
    def attacks(self):
        try:
            import attacks  # noqa: F401 - optional module
        except ImportError:
            return
        folder = os.path.join(self.workdir, "attacks")
        os.makedirs(folder, exist_ok=True)
        # Under AddressSanitizer freed memory waits in its quarantine (256
        # MiB by default), counted in the resident size the attacks measure
        # against their budget: a small quarantine keeps the figure the
        # node's own. Any other build runs as it is.
        saved = os.environ.get("ASAN_OPTIONS")
        ldd = subprocess.run(["ldd", self.binary], capture_output=True, text=True).stdout
        if "libasan" in ldd:
            os.environ["ASAN_OPTIONS"] = ((saved + ":") if saved else "") + \
                "quarantine_size_mb=8"
        try:
            results = attacks.run_all(self.binary, folder)
        finally:
            if saved is None:
                os.environ.pop("ASAN_OPTIONS", None)
            else:
                os.environ["ASAN_OPTIONS"] = saved
        self.tally.attacks += len(results)
        for a in results:
            if a.get("crashed"):
                self.tally.crashes += 1
            with self.subTest(attack=a.get("name")):
                self.assertFalse(a["crashed"], a)
                self.assertTrue(a["served"], a)
                self.assertEqual(a["lost"], 0, a)
                self.assertLessEqual(a["peak_rss_mib"], a["budget_mib"], a)

    # -- the suite ---------------------------------------------------------------
    def test_every_crash_point_of_the_code_is_in_the_suite(self):
        in_code = set()
        for folder in ("storage", "service"):
            for name in os.listdir(os.path.join(harness.REPO_ROOT, folder)):
                if name.endswith(".c"):
                    with open(os.path.join(harness.REPO_ROOT, folder, name)) as f:
                        for call in re.findall(r"CRASH_POINT\((.*?)\);", f.read()):
                            in_code.update(re.findall(r'"([^"]+)"', call))
        listed = {p.split(":")[0] for p, _ in CRASH_POINTS}
        self.assertGreaterEqual(len(in_code), 22)
        self.assertEqual(in_code, listed)

    def test_kills_at_every_crash_point_and_faulty_destinations_lose_nothing(self):
        t0 = time.monotonic()
        seed = int(os.environ.get("AINODE_FAULTS_SEED") or random.randrange(1, 1 << 30))
        print("(random kills: seed %d; AINODE_FAULTS_SEED=%d reruns them)" % (seed, seed),
              flush=True)
        rnd = random.Random(seed)
        pacs = harness.StoreSCP(os.path.join(self.workdir, "pacs"), extra=["+uf"])
        archive = harness.StoreSCP(os.path.join(self.workdir, "archive"), aet="ARCHIVE",
                                   extra=["+uf"])
        try:
            with pacs, archive:
                only = os.environ.get("AINODE_FAULTS_ONLY")  # "a,b": while debugging them
                for point, opts in CRASH_POINTS:
                    if only and point not in only.split(","):
                        continue
                    with self.subTest(crash_point=point, **opts):
                        self.kill_at_point(point, opts, pacs, archive)
                for i in range(RANDOM_KILLS):
                    with self.subTest(random_kill=i, seed=seed):
                        self.random_kill(rnd, i, pacs, archive)
            with self.subTest(part="faulty destinations"):
                self.faulty_destinations()
            with self.subTest(part="attacks"):
                self.attacks()
        finally:
            sys.stdout.write("(the kills, destinations and attacks took %.0f s)\n"
                             % (time.monotonic() - t0))
            sys.stdout.write(self.tally.line() + "\n")
            sys.stdout.flush()
        self.assertEqual(self.tally.crashes, 0)


if __name__ == "__main__":
    unittest.main()
