#!/usr/bin/python3
"""Integration tests of DICOM TLS, both ways, against DCMTK's own TLS peers
(echoscu / storescu / storescp +tls): the node's TLS listener (certificates
checked per verify_client, wrong-port callers dropped while the node keeps
serving, stalled handshakes delaying no one) and sending to a TLS
destination (a server certificate of another CA or an expired one is
refused for good, with the reason in `ainode status`). The certificates are
made at test time with the openssl command line (tests/tools/tlscerts.py).
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_tls.TLSTest.test_x
"""

import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawscu  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from tlscerts import make_pki  # noqa: E402


def tls_args(key, crt, ca):
    """DCMTK's options for TLS with KEY/CRT, trusting CA."""
    return ["+tls", key, crt, "+cf", ca]


def listening_ports(pid):
    """The TCP ports process PID listens on (from /proc: its sockets' inodes
    matched against the kernel's tables of listening sockets)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class TLSTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_tool("openssl")
        cls.pki_dir = tempfile.mkdtemp(prefix="ainode-pki-")
        cls.pki = make_pki(cls.pki_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def tls_node(self, verify_client="required", sections=None, tls_extra=None, **overrides):
        p = self.pki
        port = harness.free_port()
        tls_port = harness.free_port()
        while tls_port == port:
            tls_port = harness.free_port()
        tls = {"port": tls_port, "certificate": p.server_crt, "private_key": p.server_key,
               "ca_certificates": p.ca, "verify_client": verify_client}
        tls.update(tls_extra or {})
        n = self.node(sections=sections, port=port, tls=tls, **overrides)
        n.tls_port = tls_port
        return n

    def client(self):
        p = self.pki
        return tls_args(p.client_key, p.client_crt, p.ca)

    def tls_echo(self, n, port=None, extra=None, check=False):
        return harness.echoscu(n.tls_port if port is None else port, ae_called=n.ae,
                               extra=self.client() if extra is None else extra, check=check)

    def test_tls_echo_and_store_succeed(self):
        n = self.tls_node()
        n.start()
        r = self.tls_echo(n)
        self.assertEqual(r.returncode, 0, r.stdout)
        files = make_ct_series(os.path.join(self.workdir, "in"), 5, rows=32, cols=32)
        r = harness.storescu(n.tls_port, files, ae_called=n.ae, extra=self.client())
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 5), r.stdout)
        self.assertEqual(n.instances_total(), 5)
        self.assertIn("listening for DICOM TLS on 127.0.0.1:%d" % n.tls_port, n.log())
        # What each handshake agreed, and who the caller is.
        self.assertRegex(n.log(), r"TLS connection from 127\.0\.0\.1: TLSv1\.[23], \S+, "
                                  r"peer /CN=test client")
        self.assertEqual(n.stop(), 0)
        self.assert_store_clean(n)

    def test_client_certificate_of_another_ca_is_refused(self):
        p = self.pki
        rogue = tls_args(p.rogue_key, p.rogue_crt, p.ca)
        for mode, accepted in (("required", False), ("optional", False), ("off", True)):
            with self.subTest(verify_client=mode):
                n = self.tls_node(verify_client=mode)
                n.start()
                r = self.tls_echo(n, extra=rogue)
                self.assertEqual(r.returncode == 0, accepted, r.stdout)
                if not accepted:
                    harness.wait_until(lambda: "certificate verify failed" in n.log(), 5, 0.05,
                                       "the refusal logged")
                    self.assertIn("unable to get local issuer certificate", n.log())
                # The node serves trusted callers as before.
                r = self.tls_echo(n)
                self.assertEqual(r.returncode, 0, r.stdout)
                self.assertEqual(n.stop(), 0)
                # No key material in the log.
                log = n.log()
                self.assertNotIn("PRIVATE KEY", log)
                for key in (p.server_key, p.rogue_key):
                    with open(key) as f:
                        body = [ln for ln in f.read().splitlines() if "-----" not in ln]
                    self.assertFalse([ln for ln in body if ln in log])

    def test_callers_must_use_their_certificate_s_cn_as_ae_title_when_asked(self):
        n = self.tls_node(verify_client="optional",
                          tls_extra={"callers_match_certificate": True})
        n.start()
        # The client certificate's subject is /CN=test client.
        r = harness.echoscu(n.tls_port, ae_called=n.ae, ae_calling="test client",
                            extra=self.client(), check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        r = harness.echoscu(n.tls_port, ae_called=n.ae, ae_calling="PACS",
                            extra=self.client(), check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("Calling AE Title Not Recognized", r.stdout)
        harness.wait_until(lambda: "(or not its certificate's CN)" in n.log(), 5, 0.05,
                           "the rejection logged")
        # Without a certificate (allowed by verify_client: optional) there is
        # no CN to match: rejected too.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.ca)
        with self.assertRaises(rawscu.Rejected):
            rawscu.Association(n.tls_port, called=n.ae, calling="test client",
                               ssl_context=ctx, timeout=10)
        # The plain port is not affected.
        r = harness.echoscu(n.port, ae_called=n.ae, ae_calling="PACS", check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(n.stop(), 0)

    def test_an_expired_client_certificate_is_refused(self):
        p = self.pki
        expired = tls_args(p.expired_key, p.expired_crt, p.ca)
        for mode, accepted in (("required", False), ("optional", False), ("off", True)):
            with self.subTest(verify_client=mode):
                n = self.tls_node(verify_client=mode)
                n.start()
                r = self.tls_echo(n, extra=expired)
                self.assertEqual(r.returncode == 0, accepted, r.stdout)
                if not accepted:
                    harness.wait_until(lambda: "certificate has expired" in n.log(), 5, 0.05,
                                       "the refusal logged with its reason")
                r = self.tls_echo(n)
                self.assertEqual(r.returncode, 0, r.stdout)
                self.assertEqual(n.stop(), 0)

    def test_port_0_serves_dicom_tls_only(self):
        n = self.tls_node()
        plain_port = n.port
        n.config["node"]["port"] = 0
        n.write_raw_config(n.config_text())
        n.start(wait=False)
        harness.wait_until(lambda: self.tls_echo(n).returncode == 0, 20, 0.1,
                           "the TLS port answering")
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=16, cols=16)
        r = harness.storescu(n.tls_port, files, ae_called=n.ae, extra=self.client())
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 2), r.stdout)
        self.assertIn("listening for DICOM TLS only on 127.0.0.1:%d" % n.tls_port, n.log())
        self.assertNotIn("listening on 127.0.0.1", n.log())
        # Nothing listens for plain DICOM: the node's only listening TCP
        # socket is the TLS one.
        self.assertEqual(listening_ports(n.pid), {n.tls_port})
        r = harness.echoscu(plain_port, ae_called=n.ae, check=False, connect_timeout=1)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(n.stop(), 0)

    def test_a_caller_without_a_certificate_is_refused_unless_verify_client_allows(self):
        # Python's ssl module, trusting our CA, presenting no certificate.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.ca)
        for mode, accepted in (("required", False), ("optional", True), ("off", True)):
            with self.subTest(verify_client=mode):
                n = self.tls_node(verify_client=mode)
                n.start()
                if accepted:
                    a = rawscu.Association(n.tls_port, called=n.ae, ssl_context=ctx, timeout=10)
                    self.assertEqual(a.echo(), 0)
                    self.assertTrue(a.release())
                else:
                    with self.assertRaises((OSError, rawscu.Aborted)):
                        a = rawscu.Association(n.tls_port, called=n.ae, ssl_context=ctx,
                                               timeout=10)
                        a.echo()
                    harness.wait_until(lambda: "TLS connection from 127.0.0.1 failed" in n.log(),
                                       5, 0.05, "the refusal logged")
                    self.assertIn("peer did not return a certificate", n.log())
                r = self.tls_echo(n)
                self.assertEqual(r.returncode, 0, r.stdout)
                self.assertEqual(n.stop(), 0)

    def test_callers_on_the_wrong_port_are_dropped_and_the_node_keeps_serving(self):
        n = self.tls_node()
        n.start()
        # Plain DICOM on the TLS port.
        t0 = time.monotonic()
        r = harness.echoscu(n.tls_port, ae_called=n.ae, check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertLess(time.monotonic() - t0, 5)
        harness.wait_until(lambda: "not TLS on the TLS port" in n.log(), 5, 0.05, "log line")
        self.assertEqual(n.log().count("not TLS on the TLS port"), 1)
        t0 = time.monotonic()
        r = harness.echoscu(n.port, ae_called=n.ae, check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertLess(time.monotonic() - t0, 1.0)
        # TLS on the plain port.
        t0 = time.monotonic()
        r = self.tls_echo(n, port=n.port)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertLess(time.monotonic() - t0, 5)
        harness.wait_until(lambda: "TLS on the plain DICOM port" in n.log(), 5, 0.05, "log line")
        self.assertEqual(n.log().count("TLS on the plain DICOM port"), 1)
        for port, extra in ((n.port, []), (n.tls_port, self.client())):
            r = harness.echoscu(port, ae_called=n.ae, extra=extra, check=False)
            self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(n.stop(), 0)

    def stalled_handshake(self, port):
        """A TLS client that sends its ClientHello, reads the server's first
        flight and then says nothing: the server waits in its handshake."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(outgoing.read())
        s.settimeout(5)
        self.assertTrue(s.recv(65536), "no ServerHello")
        return s

    def test_stalled_handshakes_delay_neither_callers_nor_stop(self):
        grace = 3
        n = self.tls_node(shutdown_grace_seconds=grace)
        n.start()
        stalled = [self.stalled_handshake(n.tls_port) for _ in range(5)]
        # One that stops in the middle of its ClientHello, too.
        half = socket.create_connection(("127.0.0.1", n.tls_port))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        stalled.append(half)
        try:
            time.sleep(0.3)
            for _ in range(3):
                for port, extra in ((n.port, []), (n.tls_port, self.client())):
                    t0 = time.monotonic()
                    r = harness.echoscu(port, ae_called=n.ae, extra=extra, check=False)
                    took = time.monotonic() - t0
                    self.assertEqual(r.returncode, 0, r.stdout)
                    self.assertLess(took, 1.0, "C-ECHO on port %d took %.2f s" % (port, took))
            t0 = time.monotonic()
            n.signal(signal.SIGTERM)
            rc = n.wait(timeout=grace + 15)
            took = time.monotonic() - t0
            self.assertEqual(rc, 0, n.log_tail())
            self.assertLess(took, grace, "stop took %.2f s" % took)
        finally:
            for s in stalled:
                s.close()

    def test_a_stalled_handshake_is_closed_after_the_artim_timeout(self):
        n = self.tls_node(artim_timeout_seconds=2)
        n.start()
        s = self.stalled_handshake(n.tls_port)
        try:
            s.settimeout(30)
            t0 = time.monotonic()
            while s.recv(65536):  # until the node closes it
                pass
            took = time.monotonic() - t0
            self.assertGreater(took, 1.5)
            self.assertLess(took, 6)
        finally:
            s.close()
        harness.wait_until(lambda: "TLS handshake timed out" in n.log(), 5, 0.05, "log line")
        self.assertEqual(n.stop(), 0)

    def test_a_certificate_that_cannot_be_used_stops_the_start_with_the_reason(self):
        p = self.pki
        bad = os.path.join(self.workdir, "bad.crt")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        for cert, key, text in ((bad, p.server_key, "cannot load the certificate " + bad),
                                (p.server_crt, p.client_key,
                                 "cannot load the private key " + p.client_key)):
            with self.subTest(certificate=cert, key=key):
                n = self.node(name="node-%d" % len(self.nodes), tls={
                    "port": harness.free_port(), "certificate": cert, "private_key": key,
                    "ca_certificates": p.ca})
                with self.assertRaises(harness.NodeError):
                    n.start()
                self.assertIn("TLS listener: " + text, n.log())
                self.assertNotIn("PRIVATE KEY", n.log())

    def test_results_go_to_a_tls_destination_and_bad_server_certificates_are_refused(self):
        p = self.pki
        client = [p.client_key, p.client_crt]
        good = harness.StoreSCP(os.path.join(self.workdir, "good"), aet="GOOD",
                                extra=tls_args(p.server_key, p.server_crt, p.ca),
                                echo_extra=self.client())
        other = harness.StoreSCP(os.path.join(self.workdir, "other"), aet="OTHER",
                                 extra=["+tls", p.rogue_server_key, p.rogue_server_crt, "-ic"],
                                 echo_extra=["+tls", *client, "-ic"])
        expired = harness.StoreSCP(os.path.join(self.workdir, "expired"), aet="EXPIRED",
                                   extra=["+tls", p.expired_key, p.expired_crt, "-ic"],
                                   echo_extra=["+tls", *client, "-ic"])
        with good, other, expired:
            tls = {"ca_certificates": p.ca, "certificate": p.client_crt,
                   "private_key": p.client_key}
            dest = {name: {"ae_title": scp.aet, "host": "127.0.0.1", "port": scp.port,
                           "retry_initial_seconds": 1, "max_attempts": 5, "tls": tls}
                    for name, scp in (("good", good), ("other", other), ("expired", expired))}
            sections = {"destinations": dest,
                        "rules": [{"name": "fwd", "match": {"Modality": "MR"},
                                   "forward_to": ["good", "other", "expired"]}]}
            n = self.tls_node(sections=sections, stable_seconds=1)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, "mr"), 2, rows=16, cols=16,
                                   modality="MR")
            r = harness.storescu(n.tls_port, files, ae_called=n.ae, extra=self.client())
            self.assertTrue(harness.all_stores_succeeded(r.stdout, 2), r.stdout)

            def settled():
                items = n.status()["outbox"]
                if len(items) != 6 or any(i["state"] == "pending" for i in items):
                    return None
                return items
            items = harness.wait_until(settled, 60, 0.2, "every forward settled")
            by = {}
            for it in items:
                by.setdefault(it["destination"], []).append(it)
            self.assertEqual([i["state"] for i in by["good"]], ["sent", "sent"])
            self.assertEqual(len(good.files()), 2)
            for name, reason in (("other", "unable to get local issuer certificate"),
                                 ("expired", "certificate has expired")):
                for it in by[name]:
                    with self.subTest(destination=name):
                        self.assertEqual(it["state"], "failed", it)
                        self.assertEqual(it["attempts"], 1, it)
                        self.assertIn("certificate verify failed", it["error"])
                        self.assertIn(reason, it["error"])
            self.assertEqual(other.files(), [])
            self.assertEqual(expired.files(), [])
            self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
