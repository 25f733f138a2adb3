#!/usr/bin/python3
"""An instance is answered with success only once its file and its
directory entry are on stable storage.

The node runs with tests/tools/fsync_hold.c preloaded (built next to the
tests; the ctest passes its path as AINODE_FSYNC_SHIM), which records every
fsync and fdatasync with the path flushed, and can hold the flushes of
chosen paths until the test lets them go. A storescu that gets its answer
while the flush of its instance's file, or of the directory that names it,
is held proves an answer sent too early; the record of a run shows each
answered instance's file flushed, then its directory.

Run one with:
    AINODE_BINARY=build/ainode AINODE_FSYNC_SHIM=build/tests/libfsync_hold.so \\
        /usr/bin/python3 -m unittest test_durability -v
"""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_receiver import NodeTestCase, db_rows  # noqa: E402


def shim_path():
    path = os.environ.get("AINODE_FSYNC_SHIM") or os.path.join(
        os.path.dirname(harness.default_binary()), "tests", "libfsync_hold.so")
    if not os.path.exists(path):
        raise AssertionError("the fsync recording library is missing: %s (build the "
                             "fsync_hold target, or set AINODE_FSYNC_SHIM)" % path)
    return os.path.abspath(path)


def output(p):
    """What the background storescu P has printed so far."""
    p.out.seek(0)
    return p.out.read()


def read_flushes(log):
    """[(call, path, rc)] in order; a held flush is ("hold", path, None)."""
    out = []
    if not os.path.exists(log):
        return out
    with open(log) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            if parts[0] == "hold":
                out.append(("hold", " ".join(parts[1:]), None))
            else:
                out.append((parts[0], " ".join(parts[1:-1]), int(parts[-1])))
    return out


class DurabilityTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.log = os.path.join(self.workdir, "flushes.log")
        self.flag = os.path.join(self.workdir, "hold")
        env = dict(os.environ)
        preload = env.get("LD_PRELOAD")
        env["LD_PRELOAD"] = shim_path() + ((":" + preload) if preload else "")
        # In a sanitizer build the preloaded library comes before the
        # sanitizer's runtime, which is then only a dependency: allowed.
        asan = env.get("ASAN_OPTIONS")
        env["ASAN_OPTIONS"] = ((asan + ":") if asan else "") + "verify_asan_link_order=0"
        env["AINODE_FSYNC_LOG"] = self.log
        env["AINODE_FSYNC_HOLD"] = self.flag
        self.env = env

    def start_node(self, hold_suffix):
        env = dict(self.env, AINODE_FSYNC_HOLD_SUFFIX=hold_suffix)
        n = self.node(env=env)
        n.start()
        return n

    def send_held(self, n, files):
        """storescu sending FILES in the background (its output in .out)."""
        out = open(os.path.join(self.workdir, "storescu.out"), "w+")
        self.addCleanup(out.close)
        cmd = ["storescu", "-v", "-aet", "STORESCU", "-aec", n.ae, harness.LOOPBACK,
               str(n.port)] + list(files)
        harness.require_tool("storescu")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, env=harness.dcmtk_env())
        p.out = out
        return p

    def held(self):
        return [path for call, path, _ in read_flushes(self.log) if call == "hold"]

    def assert_answered_only_after(self, what, hold_suffix, expect_held, series_uid=None):
        """Holds the flushes of paths ending in HOLD_SUFFIX; one instance (of
        SERIES_UID, when given) is sent: it must not be answered (nor
        indexed) while its flush waits, and is answered once it is done."""
        series = make_ct_series(os.path.join(self.workdir, "in"), 1, rows=64, cols=64,
                                series_uid=series_uid)
        open(self.flag, "w").close()
        n = self.start_node(hold_suffix)
        p = self.send_held(n, series)
        try:
            harness.wait_until(lambda: self.held(), 30, 0.05, "a held flush of " + what)
            held = self.held()[0]
            self.assertTrue(expect_held(held), held)
            # Long enough for an answer to have reached storescu, were it sent.
            time.sleep(1.5)
            self.assertIsNone(p.poll(), "storescu was answered while the flush of %s "
                              "was held:\n%s" % (what, output(p)))
            self.assertEqual(db_rows(n, "SELECT COUNT(*) FROM instances"), [(0,)],
                             "indexed before the flush of " + what)
        finally:
            os.unlink(self.flag)
        self.assertEqual(p.wait(60), 0)
        out = output(p)
        self.assertTrue(harness.all_stores_succeeded(out, 1), out)
        flushed = [(c, path, rc) for c, path, rc in read_flushes(self.log)
                   if c != "hold" and path == held]
        self.assertTrue(flushed and flushed[-1][2] == 0, flushed)
        self.assertEqual(len(n.stored_files()), 1)
        n.stop()
        self.assert_store_clean(n)

    def test_an_instance_is_answered_only_after_its_file_is_flushed(self):
        self.assert_answered_only_after(
            "the instance's file", ".dcm",
            lambda path: "/instances/" in path and path.endswith(".dcm"))

    def test_an_instance_is_answered_only_after_its_directory_is_flushed(self):
        series_uid = "1.2.826.0.1.3680043.8.498.77001"
        self.assert_answered_only_after(
            "the series directory", "/" + series_uid,
            lambda path: os.path.isdir(path) and path.endswith("/" + series_uid),
            series_uid=series_uid)

    def test_every_answered_instance_was_flushed_then_its_directory(self):
        # Two series in one association, so that two directories are named.
        a = make_ct_series(os.path.join(self.workdir, "a"), 6, rows=64, cols=64)
        b = make_ct_series(os.path.join(self.workdir, "b"), 6, rows=64, cols=64,
                           series_number=2)
        n = self.start_node("never-held")
        r = harness.storescu(n.port, a + b)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 12), r.stdout)
        n.stop()
        flushes = [(c, os.path.realpath(p), rc) for c, p, rc in read_flushes(self.log)
                   if c != "hold"]
        paths = [row[0] for row in db_rows(n, "SELECT path FROM instances")]
        self.assertEqual(len(paths), 12)
        for path in paths:
            path = os.path.realpath(path)
            where = [i for i, (c, p, rc) in enumerate(flushes) if p == path and rc == 0]
            self.assertTrue(where, "%s was answered but never flushed" % path)
            directory = os.path.dirname(path)
            after = [i for i, (c, p, rc) in enumerate(flushes)
                     if p == directory and rc == 0 and i > where[0]]
            self.assertTrue(after, "the directory of %s was not flushed after it" % path)
        # The study's directory names the series' ones: it is flushed too.
        for directory in {os.path.dirname(os.path.dirname(os.path.realpath(p)))
                          for p in paths}:
            self.assertIn(directory, [p for _, p, rc in flushes if rc == 0])


if __name__ == "__main__":
    unittest.main()
