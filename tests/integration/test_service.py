#!/usr/bin/python3
"""The node under a service manager, and one node per data directory.

sd_notify for real: each test binds a unix datagram socket, starts
`ainode serve` with NOTIFY_SOCKET naming it (as systemd does for
Type=notify) and reads what arrives. The single-instance guard: a second
serve on the same data_dir refuses to start, and `ainode reload` signals
only a live node holding DATA_DIR/ainode.lock, never the process a stale
file names.
"""

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

EXIT_IN_USE = 6        # serve: another node serves the data directory
EXIT_NOT_SERVING = 7   # reload: no node serves it, nothing signalled


class NotifySocket:
    """A unix datagram socket in DIRECTORY, where the node's messages arrive."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (monotonic time, {key: value}) in arrival order

    def close(self):
        self.sock.close()

    def receive(self, timeout):
        """The next message as a dict, or None after TIMEOUT seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key, timeout, on_message=None):
        """Receives until a message has KEY; returns it (None after TIMEOUT).
        ON_MESSAGE(fields) is called for every message as it arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.receive(deadline - time.monotonic())
            if m is None:
                break
            if on_message:
                on_message(m)
            if key in m:
                return m
        return None

    def collect(self, seconds):
        """Every message that arrives within SECONDS."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self.receive(deadline - time.monotonic())
            if m is not None:
                got.append(m)
        return got


def port_accepts(port):
    try:
        with socket.create_connection((harness.LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.binary = harness.default_binary()
        self.workdir = tempfile.mkdtemp(prefix="ainode-service-")
        self.nodes = []
        self.procs = []

    def tearDown(self):
        for n in self.nodes:
            if n.running():
                n.stop()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def node(self, name="node", env=None, **overrides):
        n = harness.Node(self.binary, os.path.join(self.workdir, name), env=env, **overrides)
        self.nodes.append(n)
        return n

    def notified_node(self, watchdog_usec=None, **overrides):
        """A node (not started) whose NOTIFY_SOCKET is a socket of the test's."""
        notify = NotifySocket(self.workdir)
        self.addCleanup(notify.close)
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return self.node(env=env, **overrides), notify

    def sleeper(self):
        """An unrelated live process (sleep), which SIGHUP would end."""
        p = subprocess.Popen(["sleep", "60"])
        self.procs.append(p)
        return p

    # -- sd_notify ------------------------------------------------------------

    def test_ready_is_sent_once_the_dicom_port_accepts(self):
        n, notify = self.notified_node()
        n.start(wait=False)
        accepted_at_ready = []
        ready = notify.wait_for(
            "READY", 30, lambda m: "READY" in m and accepted_at_ready.append(port_accepts(n.port)))
        self.assertIsNotNone(ready, "no READY=1 within 30 s\n" + n.log_tail())
        self.assertEqual(ready["READY"], "1")
        self.assertEqual(accepted_at_ready, [True], "READY=1 came before the port accepted")
        self.assertEqual(ready.get("STATUS"), "listening on port %d" % n.port)
        harness.echoscu(n.port, ae_called=n.ae)
        self.assertEqual(n.stop(), 0)

    def test_watchdog_and_status_arrive_periodically_from_the_loop(self):
        n, notify = self.notified_node(watchdog_usec=400000)  # a ping every 0.2 s
        n.start(wait=False)
        self.assertIsNotNone(notify.wait_for("READY", 30), n.log_tail())
        got = notify.collect(6)
        pings = [m for m in got if m.get("WATCHDOG") == "1"]
        self.assertGreaterEqual(len(pings), 15, "%d WATCHDOG=1 in 6 s" % len(pings))
        self.assertLessEqual(len(pings), 45, "%d WATCHDOG=1 in 6 s" % len(pings))
        statuses = [m["STATUS"] for m in got if "STATUS" in m]
        self.assertTrue(statuses, "no STATUS= line in 6 s")
        self.assertLessEqual(len(statuses), 2, statuses)  # every 5 s, not more
        self.assertRegex(statuses[-1], r"^listening on port %d; 0 studies waiting to complete, "
                                       r"0 associations open$" % n.port)
        self.assertEqual(n.stop(), 0)

    def test_no_watchdog_ping_without_watchdog_usec(self):
        n, notify = self.notified_node()
        n.start(wait=False)
        self.assertIsNotNone(notify.wait_for("READY", 30), n.log_tail())
        self.assertEqual([m for m in notify.collect(1.5) if "WATCHDOG" in m], [])
        self.assertEqual(n.stop(), 0)

    def test_stopping_is_sent_on_sigterm(self):
        n, notify = self.notified_node(watchdog_usec=2000000)
        n.start(wait=False)
        self.assertIsNotNone(notify.wait_for("READY", 30), n.log_tail())
        n.signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING", 10)
        self.assertIsNotNone(stopping, "no STOPPING=1 after SIGTERM\n" + n.log_tail())
        self.assertEqual(stopping["STOPPING"], "1")
        self.assertTrue(stopping.get("STATUS", "").startswith("stopping"), stopping)
        self.assertEqual(n.wait(30), 0)

    # -- one node per data directory ------------------------------------------

    def test_second_serve_on_the_same_data_dir_refuses_to_start(self):
        first = self.node("first")
        first.start()
        second = self.node("second", data_dir=first.data_dir)
        second.start(wait=False)
        self.assertEqual(second.wait(30), EXIT_IN_USE, second.log_tail())
        self.assertIn("another ainode (pid %d) is serving %s" % (first.pid, first.data_dir),
                      second.log())
        self.assertIn("not starting", second.log())
        self.assertFalse(port_accepts(second.port), "the second node listened")
        harness.echoscu(first.port, ae_called=first.ae)  # the first one serves on
        self.assertEqual(first.stop(), 0)
        # Once the first has stopped, the directory is free again.
        second.start()
        self.assertEqual(second.stop(), 0)

    def test_reload_with_a_stale_lock_file_signals_nothing(self):
        n = self.node()  # never started: ainode.lock is left from a node long gone
        sleeper = self.sleeper()
        with open(os.path.join(n.data_dir, "ainode.lock"), "w") as f:
            f.write("%d\n" % sleeper.pid)
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, EXIT_NOT_SERVING, r.stdout + r.stderr)
        self.assertIn("no node is serving %s" % n.data_dir, r.stderr)
        self.assertIn("is not locked", r.stderr)
        self.assertIn("nothing signalled", r.stderr)
        time.sleep(0.3)
        self.assertIsNone(sleeper.poll(), "the process the stale file names was signalled")

    def test_reload_with_no_lock_file_signals_nothing(self):
        n = self.node()
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, EXIT_NOT_SERVING, r.stdout + r.stderr)
        self.assertIn("no node is serving", r.stderr)

    def test_reload_signals_nothing_when_the_holder_is_not_the_process_named(self):
        # The lock is held (here by the test) but the file names another
        # live process: that process is not the node, and is left alone.
        n = self.node()
        sleeper = self.sleeper()
        with open(os.path.join(n.data_dir, "ainode.lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.write("%d\n" % sleeper.pid)
            f.flush()
            r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("pid %d, which it names, does not hold it" % sleeper.pid, r.stderr)
        self.assertIn("nothing signalled", r.stderr)
        time.sleep(0.3)
        self.assertIsNone(sleeper.poll(), "the process the file names was signalled")

    def test_reload_signals_the_live_node_holding_the_lock(self):
        n = self.node()
        n.start()
        with open(os.path.join(n.data_dir, "ainode.lock")) as f:
            self.assertEqual(f.read(), "%d\n" % n.pid)
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("reload requested from the node (pid %d)" % n.pid, r.stdout)
        harness.wait_until(lambda: "reloaded:" in n.log(), 10, 0.1, "the reload")
        self.assertEqual(n.stop(), 0)
        # Stopped: the lock is free, and reload says so.
        r = n.cli("reload", "-c", n.config_path)
        self.assertEqual(r.returncode, EXIT_NOT_SERVING, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
