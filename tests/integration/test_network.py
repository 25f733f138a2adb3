#!/usr/bin/python3
"""Integration tests of the node's network behaviour against real peers:
how a failed send is classified (transient: backoff; permanent: dead-lettered
at once, shown by `status`, re-queued by `retry`), and association requests
read off the accept thread, so that silent connections delay neither other
callers nor a stop. Peers: DCMTK's storescp and rawscu.py's server, which
speaks real PDUs and rejects, refuses a SOP class or answers a chosen status.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_network.NetworkTest.test_x
"""

import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawscu  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
import pydicom  # noqa: E402
from test_inference import phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def fd_count(pid):
    """Open file descriptors of process PID."""
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """User plus system CPU time of process PID so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_connection(port, send=b""):
    """Connects, sends SEND, and resets the connection (SO_LINGER 0: RST, not FIN)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        if send:
            s.sendall(send)
    finally:
        s.close()


CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


def _element(group, elem, vr, value):
    """One explicit VR little endian element."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def make_deflate_bomb(path, inflated_mb, inst_uid):
    """A real deflated CT (1.2.840.10008.1.2.1.99) whose pixel data, all
    zeros, is INFLATED_MB MiB once inflated but a few hundred KB as a file.
    Streamed through zlib: never whole in this process's memory."""
    side = 1024 * int((inflated_mb / 2) ** 0.5)  # 16-bit square image
    study, series = "2.25.%d1" % os.getpid(), "2.25.%d2" % os.getpid()
    meta_body = b"".join([
        _element(0x0002, 0x0001, b"OB", b"\0\1"),
        _element(0x0002, 0x0002, b"UI", CT_CLASS.encode()),
        _element(0x0002, 0x0003, b"UI", inst_uid.encode()),
        _element(0x0002, 0x0010, b"UI", DEFLATED.encode()),
        _element(0x0002, 0x0012, b"UI", b"1.2.826.0.1.3680043.8.498.1"),
    ])
    meta = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    us = lambda v: struct.pack("<H", v)  # noqa: E731
    head = b"".join([
        _element(0x0008, 0x0016, b"UI", CT_CLASS.encode()),
        _element(0x0008, 0x0018, b"UI", inst_uid.encode()),
        _element(0x0008, 0x0060, b"CS", b"CT"),
        _element(0x0010, 0x0020, b"LO", b"BOMB"),
        _element(0x0020, 0x000D, b"UI", study.encode()),
        _element(0x0020, 0x000E, b"UI", series.encode()),
        _element(0x0028, 0x0002, b"US", us(1)),
        _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        _element(0x0028, 0x0010, b"US", us(side)),
        _element(0x0028, 0x0011, b"US", us(side)),
        _element(0x0028, 0x0100, b"US", us(16)),
        _element(0x0028, 0x0101, b"US", us(16)),
        _element(0x0028, 0x0102, b"US", us(15)),
        _element(0x0028, 0x0103, b"US", us(0)),
        struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, side * side * 2),
    ])
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(bytes(128) + b"DICM" + meta)
        f.write(z.compress(head))
        left = side * side * 2
        while left:
            chunk = min(left, len(zeros))
            f.write(z.compress(zeros[:chunk]))
            left -= chunk
        tail = z.flush()
        f.write(tail + (b"\0" if (f.tell() + len(tail)) % 2 else b""))
    return side * side * 2


def proc_status_kib(pid, field):
    """FIELD of /proc/PID/status (VmHWM, VmRSS, ...), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


def vm_hwm_kb(pid):
    """Peak resident memory of process PID (VmHWM), in KiB."""
    return proc_status_kib(pid, "VmHWM")


def timed_echo(test, n, ae_calling="ECHOSCU"):
    """C-ECHO to node N must succeed; returns how long it took."""
    t0 = time.monotonic()
    r = harness.echoscu(n.port, ae_called=n.ae, ae_calling=ae_calling, check=False)
    took = time.monotonic() - t0
    test.assertEqual(r.returncode, 0, r.stdout + n.log_tail())
    return took


class RawSCP:
    """rawscu.py's server on a free loopback port, as a process stopped by its PID."""

    def __init__(self, log_path, *args):
        self.port = harness.free_port()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "rawscu.py"), "scp", str(self.port), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
            start_new_session=True)
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            self.stop()
            raise harness.HarnessError("rawscu.py scp did not start: %r" % line)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()


# Destinations of one study's results, each behind another peer, with what
# must become of its SEG and SR: (name, rawscu.py arguments or None for a
# port nothing listens on, {kind: expected outcome}, text the error holds).
TRANSIENT, PERMANENT, SENT = "transient", "permanent", "sent"
PEERS = [
    ("down", None, {"seg": TRANSIENT, "sr": TRANSIENT}, "cannot open an association"),
    ("busy", ["--reject", "2,3,2"], {"seg": TRANSIENT, "sr": TRANSIENT}, "rejected transiently"),
    ("full", ["--status", "0xA700"], {"seg": TRANSIENT, "sr": TRANSIENT}, "status 0xa700"),
    ("refuses", ["--reject", "1,1,3"], {"seg": PERMANENT, "sr": PERMANENT},
     "rejected permanently"),
    ("mismatch", ["--status", "0xA900"], {"seg": PERMANENT, "sr": PERMANENT}, "status 0xa900"),
    ("cannot", ["--status", "0xC000"], {"seg": PERMANENT, "sr": PERMANENT}, "status 0xc000"),
    ("noseg", ["--refuse-class", SEG_CLASS], {"seg": PERMANENT, "sr": SENT},
     "no presentation context for SOP class " + SEG_CLASS),
]


class NetworkTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            p.stop()
        super().tearDown()

    def test_send_failures_are_transient_or_permanent(self):
        ports = {}
        for name, args, _, _ in PEERS:
            if args is None:
                ports[name] = harness.free_port()
            else:
                peer = RawSCP(os.path.join(self.workdir, name + ".log"), *args)
                self.peers.append(peer)
                ports[name] = peer.port
        dest = {name: {"ae_title": "PEER", "host": "127.0.0.1", "port": ports[name],
                       "retry_initial_seconds": 1, "retry_factor": 2, "retry_max_seconds": 2,
                       "max_attempts": 50}
                for name, _, _, _ in PEERS}
        sections = {
            "destinations": dest,
            "models": {"ct-bone-body": {"file": "builtin:ct-bone-body", "threads": 1}},
            "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"],
                       "send_results_to": [name for name, _, _, _ in PEERS]}],
        }
        n = self.node(sections=sections, stable_seconds=1, network_timeout_seconds=5)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 8, rows=40, cols=48,
                               pixel_fn=phantom)
        harness.storescu(n.port, files, ae_called=n.ae)

        def settled():
            items = n.status()["outbox"]
            if len(items) < 2 * len(PEERS):
                return None
            for name, _, want, _ in PEERS:
                for it in items:
                    if it["destination"] != name:
                        continue
                    w = want[it["kind"]]
                    if w == TRANSIENT and not (it["state"] == "pending" and it["attempts"] >= 2):
                        return None
                    if w == PERMANENT and it["state"] != "failed":
                        return None
                    if w == SENT and it["state"] != "sent":
                        return None
            return items
        items = harness.wait_until(settled, 120, 0.3, "every send classified")

        # Give permanent failures time to be (wrongly) tried again.
        time.sleep(3)
        items = n.status()["outbox"]
        for name, _, want, text in PEERS:
            for it in [i for i in items if i["destination"] == name]:
                w = want[it["kind"]]
                with self.subTest(destination=name, kind=it["kind"]):
                    if w == SENT:
                        self.assertEqual(it["state"], "sent", it)
                        continue
                    self.assertIn(text, it["error"], it)
                    if w == TRANSIENT:
                        self.assertEqual(it["state"], "pending", it)
                        self.assertGreaterEqual(it["attempts"], 2, it)
                        self.assertIsNotNone(it["next_attempt"], it)
                    else:
                        self.assertEqual(it["state"], "failed", it)
                        self.assertEqual(it["attempts"], 1, it)
                        self.assertIsNone(it["next_attempt"], it)

        # The peer that rejected is replaced by a PACS that accepts: retry
        # re-queues the dead-lettered items and they arrive.
        refuses = next(p for p in self.peers if p.port == ports["refuses"])
        refuses.stop()
        self.peers.remove(refuses)
        with harness.StoreSCP(os.path.join(self.workdir, "pacs"), aet="PEER",
                              port=ports["refuses"]) as pacs:
            r = n.cli("retry", "-c", n.config_path, "--all-failed")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

            def delivered():
                its = [i for i in n.status()["outbox"] if i["destination"] == "refuses"]
                return its if its and all(i["state"] == "sent" for i in its) else None
            its = harness.wait_until(delivered, 60, 0.3, "re-queued items sent")
            self.assertEqual(sorted(i["kind"] for i in its), ["seg", "sr"])
            self.assertEqual(len(pacs.files()), 2)
        self.assertEqual(n.stop(), 0)

    def test_silent_connections_delay_neither_callers_nor_stop(self):
        grace = 3
        n = self.node(shutdown_grace_seconds=grace, max_associations=8)
        n.start()
        # More silent connections than max_associations: they must not count.
        silent = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(50)]
        try:
            time.sleep(0.5)
            for _ in range(3):
                t0 = time.monotonic()
                r = harness.echoscu(n.port, ae_called=n.ae, check=False)
                took = time.monotonic() - t0
                self.assertEqual(r.returncode, 0, r.stdout)
                self.assertLess(took, 1.0, "C-ECHO took %.2f s" % took)
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            rc = n.wait(timeout=grace + 10)
            took = time.monotonic() - t0
            self.assertEqual(rc, 0, n.log_tail())
            self.assertLess(took, grace, "stop took %.2f s" % took)
        finally:
            for s in silent:
                s.close()

    def test_silent_connection_is_closed_after_the_artim_timeout(self):
        n = self.node()
        n.start()
        s = socket.create_connection(("127.0.0.1", n.port))
        try:
            s.settimeout(30)
            t0 = time.monotonic()
            self.assertEqual(s.recv(1), b"")  # closed by the node
            took = time.monotonic() - t0
            self.assertGreater(took, 8)
            self.assertLess(took, 15)
        finally:
            s.close()
        self.assertEqual(n.stop(), 0)

    # --- hostile peers ------------------------------------------------------
    def test_connections_reset_at_once_leak_no_descriptor(self):
        n = self.node()
        n.start()
        timed_echo(self, n)
        time.sleep(0.5)
        baseline = fd_count(n.pid)
        rq, _ = rawscu.associate_rq(called=n.ae)
        # Reset before a word, within the request's header, with the whole
        # request sent (dcmnet gets the socket), and while it is answered.
        sends = [b"", rq[:3], rq, rq]
        for i in range(2000):
            kind = i % len(sends)
            reset_connection(n.port, sends[kind])
            if kind == 3:
                time.sleep(0.001)
        harness.wait_until(lambda: fd_count(n.pid) <= baseline, 30, 0.2,
                           "descriptors back to %d (now %d)" % (baseline, fd_count(n.pid)))
        self.assertLess(timed_echo(self, n), 1.0)
        self.assertLessEqual(fd_count(n.pid), baseline)
        self.assertEqual(n.stop(), 0)

    def test_accept_backs_off_when_descriptors_run_out(self):
        n = self.node(artim_timeout_seconds=120)
        n.start()
        timed_echo(self, n)
        time.sleep(0.5)
        baseline = fd_count(n.pid)
        limit = baseline + 24
        hard = resource.prlimit(n.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(n.pid, resource.RLIMIT_NOFILE, (limit, hard))
        held = []
        try:
            # More silent connections than descriptors left: the rest wait
            # in the listen queue while accept() fails with EMFILE.
            for _ in range(48):
                held.append(socket.create_connection(("127.0.0.1", n.port), timeout=10))
            harness.wait_until(lambda: "cannot accept connections" in n.log(), 10, 0.1,
                               "the accept failure logged")
            t0, c0 = time.monotonic(), cpu_seconds(n.pid)
            time.sleep(3)
            used = cpu_seconds(n.pid) - c0
            elapsed = time.monotonic() - t0
            self.assertLess(used, 0.1 * elapsed,
                            "%.2f s of CPU in %.1f s while out of descriptors" % (used, elapsed))
            # One line, not one per failure.
            self.assertLessEqual(n.log().count("cannot accept connections"), 2, n.log_tail())
        finally:
            for s in held:
                s.close()
        harness.wait_until(lambda: harness.echoscu(n.port, ae_called=n.ae, check=False,
                                                   timeout=10).returncode == 0,
                           20, 0.2, "C-ECHO after the connections are released")
        harness.wait_until(lambda: fd_count(n.pid) <= baseline, 20, 0.2,
                           "descriptors back to %d (now %d)" % (baseline, fd_count(n.pid)))
        self.assertLess(timed_echo(self, n), 1.0)
        self.assertEqual(n.stop(), 0)

    def test_calling_ae_with_control_characters_cannot_forge_a_log_line(self):
        n = self.node()
        n.start()
        forged = b"2026 INFO  ok"
        # 16 bytes: a newline, then what would look like a line of its own,
        # an escape byte and a byte outside ASCII.
        calling = b"EV\n" + forged[:11] + b"\x1b\xff"
        a = rawscu.Association(n.port, called=n.ae, calling=calling)
        try:
            self.assertEqual(a.echo(), 0)
            self.assertTrue(a.release())
        finally:
            a.close()
        self.assertEqual(n.stop(), 0)
        log = n.log()
        self.assertIn("EV\\n" + forged[:11].decode() + "\\x1b\\xff", log)
        for line in log.splitlines():
            self.assertFalse(line.startswith(forged[:11].decode()), line)
            self.assertNotIn("\x1b", line)

    # --- who may connect ----------------------------------------------------
    def test_addresses_outside_the_allow_list_are_closed_and_a_reload_lets_them_in(self):
        n = self.node(allowed_addresses=["10.0.0.0/8", "::1"])
        n.start(wait=False)
        harness.wait_until(lambda: "listening on" in n.log(), 20, 0.1, "the node listening")
        r = harness.echoscu(n.port, ae_called=n.ae, check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        with self.assertRaises((rawscu.Aborted, ConnectionError)):
            rawscu.Association(n.port, called=n.ae)
        harness.wait_until(lambda: "from addresses outside node.allowed_addresses" in n.log(),
                           10, 0.1, "the refusal logged")
        # Nothing was negotiated: the connection was closed at accept time.
        self.assertNotIn("association from", n.log())
        # The list is reloadable: 127.0.0.0/8 lets loopback callers in.
        n.config["node"]["allowed_addresses"] = ["10.0.0.0/8", "127.0.0.0/8"]
        n.write_raw_config(n.config_text())
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: "reloaded" in n.log(), 10, 0.1, "the reload")
        self.assertLess(timed_echo(self, n), 1.0)
        self.assertEqual(n.stop(), 0)

    def test_allow_list_holding_loopback_admits_callers(self):
        n = self.node(allowed_addresses=["127.0.0.0/8"], allowed_callers=["ECHOSCU"])
        n.start()
        timed_echo(self, n)
        # The caller list still applies alongside the address list.
        r = harness.echoscu(n.port, ae_called=n.ae, ae_calling="INTRUDER", check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("Calling AE Title Not Recognized", r.stdout)
        self.assertEqual(n.stop(), 0)

    def test_ipv6_loopback_node_filters_ipv6_peers(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError as e:
            self.skipTest("this host cannot bind ::1: %s" % e)
        for allowed, admitted in ((["::1/128"], True), (["127.0.0.0/8", "fd00::/8"], False)):
            n = self.node(name="v6-%s" % admitted, bind="::1", allowed_addresses=allowed)
            n.start(wait=False)
            harness.wait_until(lambda: "listening on" in n.log(), 20, 0.1, "the node listening")
            if admitted:
                a = rawscu.Association(n.port, called=n.ae, host="::1")
                try:
                    self.assertEqual(a.echo(), 0)
                    self.assertTrue(a.release())
                finally:
                    a.close()
                # The peer's address is the IPv6 one, not dcmnet's IPv4 reading of it.
                harness.wait_until(lambda: "(::1)" in n.log(), 5, 0.1, "the association logged")
            else:
                with self.assertRaises((rawscu.Aborted, ConnectionError)):
                    rawscu.Association(n.port, called=n.ae, host="::1")
                harness.wait_until(lambda: "(last: ::1)" in n.log(), 5, 0.1,
                                   "the refusal logged")
            self.assertEqual(n.stop(), 0)

    def test_reachable_node_without_caller_or_address_list_is_refused(self):
        # 192.0.2.1 (TEST-NET-1) is no address of this host: even a node that
        # wrongly started could not listen on it.
        n = self.node(bind="192.0.2.1")
        r = n.cli("check-config", "-c", n.config_path)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        for key in ("node.allowed_callers", "node.allowed_addresses", "node.allow_any_caller"):
            self.assertIn(key, r.stdout + r.stderr)
        r = n.cli("serve", "-c", n.config_path, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("node.allow_any_caller", r.stdout + r.stderr)
        self.assertNotIn("listening", r.stdout + r.stderr)
        for key, value in (("allow_any_caller", True), ("allowed_callers", ["PACS"]),
                           ("allowed_addresses", ["10.0.0.0/8"])):
            m = self.node(name="ok-" + key, bind="192.0.2.1", **{key: value})
            r = m.cli("check-config", "-c", m.config_path)
            self.assertEqual(r.returncode, 0, key + ": " + r.stdout + r.stderr)

    def test_one_caller_cannot_hold_more_than_its_share_of_associations(self):
        n = self.node(max_associations=8, max_associations_per_caller=2)
        n.start()
        held = [rawscu.Association(n.port, called=n.ae, calling="GREEDY") for _ in range(2)]
        try:
            with self.assertRaises(rawscu.Rejected) as cm:
                rawscu.Association(n.port, called=n.ae, calling="GREEDY")
            self.assertEqual((cm.exception.result, cm.exception.source, cm.exception.reason),
                             (2, 3, 2))  # transient, service provider, local limit exceeded
            r = harness.echoscu(n.port, ae_called=n.ae, ae_calling="GREEDY", check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("Rejected Transient", r.stdout)
            self.assertIn("Local Limit Exceeded", r.stdout)
            self.assertIn("node.max_associations_per_caller", n.log())
            # Another caller is not affected.
            timed_echo(self, n, ae_calling="MODEST")
            # A slot given back is usable again.
            self.assertTrue(held.pop().release())
            harness.wait_until(lambda: harness.echoscu(n.port, ae_called=n.ae,
                                                       ae_calling="GREEDY",
                                                       check=False).returncode == 0,
                               5, 0.1, "GREEDY admitted again")
        finally:
            for a in held:
                a.close()
        self.assertEqual(n.stop(), 0)

    def test_association_is_aborted_after_max_association_seconds_even_if_busy(self):
        n = self.node(max_association_seconds=2)
        n.start()
        a = rawscu.Association(n.port, called=n.ae)
        t0 = time.monotonic()
        try:
            with self.assertRaises((rawscu.Aborted, ConnectionError)):
                while time.monotonic() - t0 < 20:
                    self.assertEqual(a.echo(), 0)
                    time.sleep(0.2)
            took = time.monotonic() - t0
        finally:
            a.close()
        self.assertGreater(took, 1.5)
        self.assertLess(took, 5)
        self.assertIn("node.max_association_seconds", n.log())
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    def test_data_set_dripping_past_max_association_seconds_is_cut_off(self):
        n = self.node(max_association_seconds=2, network_timeout_seconds=30)
        n.start()
        f = make_ct_series(os.path.join(self.workdir, "in"), 1, rows=256, cols=256)[0]
        ds = pydicom.dcmread(f)
        data = harness.dataset_bytes(f)
        a = rawscu.Association(n.port, called=n.ae)
        t0 = time.monotonic()
        try:
            pcid = a.context_for(rawscu.CT_STORAGE)
            cmd = rawscu._command([
                (0x0002, rawscu._even_uid(rawscu.CT_STORAGE)), (0x0100, rawscu._us(0x0001)),
                (0x0110, rawscu._us(1)), (0x0700, rawscu._us(0)), (0x0800, rawscu._us(0)),
                (0x1000, rawscu._even_uid(ds.SOPInstanceUID))])
            a._send_pdv(pcid, cmd, True)
            # A few hundred bytes every 0.2 s: never idle long enough for a
            # network timeout, never done either.
            with self.assertRaises((rawscu.Aborted, ConnectionError)):
                for off in range(0, len(data) - 512, 512):
                    a.send_pdu(0x04, struct.pack(">IBB", 512 + 2, pcid, 0) + data[off:off + 512])
                    time.sleep(0.2)
                    if time.monotonic() - t0 > 20:
                        break
                a.read_pdu()
            took = time.monotonic() - t0
        finally:
            a.close()
        self.assertLess(took, 6)
        self.assertIn("node.max_association_seconds", n.log())
        harness.wait_until(lambda: os.listdir(os.path.join(n.data_dir, "tmp")) == [], 5, 0.1,
                           "the temporary file removed")
        self.assertEqual(n.stored_files(), [])
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    # --- bounded data sets --------------------------------------------------
    def test_data_set_over_max_dataset_mb_aborts_its_association(self):
        n = self.node(max_dataset_mb=1)
        n.start()
        big = make_ct_series(os.path.join(self.workdir, "big"), 1, rows=1024, cols=1024)
        small = make_ct_series(os.path.join(self.workdir, "small"), 1, rows=64, cols=64)
        r = harness.storescu(n.port, big, ae_called=n.ae, check=False)
        self.assertFalse(harness.all_stores_succeeded(r.stdout), r.stdout)
        self.assertIn("node.max_dataset_mb", n.log())
        self.assertEqual(n.stored_files(), [])
        self.assertEqual(os.listdir(os.path.join(n.data_dir, "tmp")), [])
        # Below the limit all is as before.
        r = harness.storescu(n.port, small, ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 1), r.stdout)
        self.assertEqual(len(n.stored_files()), 1)
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    def test_deflate_bomb_is_refused_without_being_inflated_in_memory(self):
        n = self.node(max_dataset_mb=16)
        n.start()
        bomb = os.path.join(self.workdir, "bomb.dcm")
        inflated = make_deflate_bomb(bomb, 512, "2.25.%d3" % os.getpid())
        self.assertLess(os.path.getsize(bomb), 2 << 20)
        self.assertGreater(inflated, 500 << 20)
        timed_echo(self, n)
        before = vm_hwm_kb(n.pid)
        # storescu -xd proposes deflated explicit little endian first.
        r = harness.storescu(n.port, bomb, ae_called=n.ae, extra=["-xd"], check=False,
                             timeout=300)
        self.assertEqual(harness.storescu_statuses(r.stdout), ["Refused: OutOfResources"],
                         r.stdout + n.log_tail())
        peak = vm_hwm_kb(n.pid)
        self.assertLess(peak - before, 64 << 10,
                        "node peak RSS grew by %d MiB for a %d MiB inflated data set"
                        % ((peak - before) >> 10, inflated >> 20))
        self.assertIn("once inflated", n.log())
        self.assertEqual(n.stored_files(), [])
        self.assertEqual(os.listdir(os.path.join(n.data_dir, "tmp")), [])
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    def test_deflated_data_set_within_the_limit_is_stored_as_sent(self):
        n = self.node(max_dataset_mb=16)
        n.start()
        f = os.path.join(self.workdir, "small-deflated.dcm")
        make_deflate_bomb(f, 2, "2.25.%d4" % os.getpid())
        r = harness.storescu(n.port, f, ae_called=n.ae, extra=["-xd"])
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 1), r.stdout + n.log_tail())
        stored = n.stored_files()
        self.assertEqual(len(stored), 1)
        with open(stored[0], "rb") as s:
            self.assertIn(DEFLATED.encode(), s.read(1024))
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    # --- free-space floor ---------------------------------------------------
    def test_store_below_the_free_space_floor_is_refused_before_its_data_set(self):
        n = self.node(min_free_disk_mb=1 << 30)  # 1 PiB: more than any disk here
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=64, cols=64)
        for f in files:  # storescu stops at the first refusal: one file per run
            r = harness.storescu(n.port, f, ae_called=n.ae, check=False)
            self.assertEqual(harness.storescu_statuses(r.stdout), ["Refused: OutOfResources"],
                             r.stdout)
        self.assertIn("node.min_free_disk_mb", n.log())
        self.assertEqual(n.log().count("node.min_free_disk_mb"), 1, n.log_tail())  # rate-limited
        self.assertEqual(n.stored_files(), [])
        self.assertEqual(os.listdir(os.path.join(n.data_dir, "tmp")), [])
        timed_echo(self, n)
        self.assertEqual(n.stop(), 0)

    def _reload(self, n, **node):
        n.config["node"].update(node)
        n.write_raw_config(n.config_text())
        count = n.log().count("reloaded:")
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: n.log().count("reloaded:") > count, 10, 0.05, "the reload")

    def test_study_with_instances_refused_for_space_waits_for_a_complete_copy(self):
        n = self.node(stable_seconds=1, min_free_disk_mb=0)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=32, cols=32)
        ds = [pydicom.dcmread(f) for f in files]
        study = str(ds[0].StudyInstanceUID)
        raw = [harness.dataset_bytes(f) for f in files]
        a = rawscu.Association(n.port, called=n.ae, calling="MODALITY")
        try:
            self.assertEqual(a.store(rawscu.CT_STORAGE, ds[0].SOPInstanceUID, raw[0]), 0)
            self._reload(n, min_free_disk_mb=1 << 30)
            self.assertEqual(a.store(rawscu.CT_STORAGE, ds[1].SOPInstanceUID, raw[1]), 0xA700)
            self.assertTrue(a.release())
        finally:
            a.close()
        self.assertIn("held back from completion", n.log())
        # Long past stable_seconds, the partial study is still receiving.
        time.sleep(3.5)
        held = "instances refused: disk below the free-space floor"
        s = n.studies()[study]
        self.assertEqual((s["state"], s["held"]), ("receiving", held))
        # The hold is the store's: a restart keeps it, and status shows it.
        self.assertEqual(n.stop(), 0)
        n.start()
        time.sleep(3.5)
        s = n.studies()[study]
        self.assertEqual((s["state"], s["held"]), ("receiving", held))
        table = n.cli("status", "-c", n.config_path, check=True).stdout
        row = [line for line in table.splitlines() if study in line]
        self.assertEqual(len(row), 1, table)
        self.assertRegex(row[0], r"^%d +%s +held +" % (s["id"], study))
        self.assertIn(held, row[0])
        # The sender sends again once there is room: now it completes.
        self._reload(n, min_free_disk_mb=0)
        a = rawscu.Association(n.port, called=n.ae, calling="MODALITY")
        try:
            self.assertEqual(a.store(rawscu.CT_STORAGE, ds[1].SOPInstanceUID, raw[1]), 0)
            self.assertTrue(a.release())
        finally:
            a.close()
        s = n.wait_for_study(study, state="complete", timeout=20)
        self.assertEqual(int(s["instances"]), 2)
        self.assertIsNone(s["held"])
        self.assertIn('event=study.released study=%d msg="held back for refused instances, '
                      'sent again' % s["id"], n.log())
        self.assertEqual(n.stop(), 0)

    def test_a_held_study_waits_without_spinning_and_completes_at_max_wait(self):
        sections = {"completion": {"max_wait_seconds": 9, "on_max_wait": "process"}}
        n = self.node(stable_seconds=1, min_free_disk_mb=0, sections=sections)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=32, cols=32)
        ds = [pydicom.dcmread(f) for f in files]
        study = str(ds[0].StudyInstanceUID)
        raw = [harness.dataset_bytes(f) for f in files]
        a = rawscu.Association(n.port, called=n.ae, calling="MODALITY")
        try:
            self.assertEqual(a.store(rawscu.CT_STORAGE, ds[0].SOPInstanceUID, raw[0]), 0)
            self._reload(n, min_free_disk_mb=1 << 30)
            self.assertEqual(a.store(rawscu.CT_STORAGE, ds[1].SOPInstanceUID, raw[1]), 0xA700)
            self.assertTrue(a.release())
        finally:
            a.close()
        self.assertIn("held back from completion", n.log())
        # Held past stable_seconds, the node waits for max_wait_seconds
        # without re-reading the store in a loop: nearly idle.
        time.sleep(1.5)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            with open("/proc/%d/stat" % n.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        before = cpu()
        time.sleep(3)
        self.assertLess(cpu() - before, 0.6)
        self.assertEqual(n.studies()[study]["state"], "receiving")
        # At max_wait_seconds it is processed with what arrived.
        n.wait_for_study(study, state="complete", timeout=20)
        self.assertIn("after max_wait_seconds (9 s)", n.log())
        self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
