#!/usr/bin/python3
"""Integration tests of the audit trail: the real node receiving from DCMTK's
storescu and echoscu (and rawscu, for an abort in the middle), sending to
DCMTK's storescp and to rawscu's refusing server, and `ainode audit` reading
what it recorded.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_audit.AuditTest.test_x
"""

import datetime
import json
import os
import sqlite3
import struct
import sys
import time
import unittest

import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawscu  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_network import RawSCP  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from tlscerts import make_pki  # noqa: E402

PATIENT = "Audit^Patient"


def audit_rows(node, table, where="1", args=()):
    """The rows of TABLE as dicts (the node may be writing meanwhile)."""
    con = sqlite3.connect("file:%s?mode=ro" % node.db_path, uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(
            "SELECT * FROM %s WHERE %s ORDER BY id" % (table, where), args)]
    finally:
        con.close()


def wait_rows(node, table, where, args=(), count=1, timeout=30):
    return harness.wait_until(
        lambda: (lambda r: r if len(r) >= count else None)(
            audit_rows(node, table, where, args)),
        timeout, 0.1, "%d row(s) of %s where %s %r" % (count, table, where, args))


class AuditTest(NodeTestCase):
    def audit(self, n, *args):
        r = n.cli("audit", "-c", n.config_path, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def audit_json(self, n, *args):
        return json.loads(self.audit(n, "--json", *args))

    def test_a_store_is_audited_with_its_caller_address_and_count(self):
        n = self.node()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16,
                               patient_name=PATIENT)
        harness.storescu(n.port, files, ae_called=n.ae, ae_calling="MODALITY1")
        rows = wait_rows(n, "audit_associations", "calling_ae=?", ("MODALITY1",))
        self.assertEqual(len(rows), 1, rows)
        a = rows[0]
        self.assertEqual((a["called_ae"], a["address"], a["stored"], a["refused"], a["outcome"]),
                         ("AINODE", "127.0.0.1", 3, 0, "released"))
        self.assertIsNone(a["tls_peer"])
        self.assertLessEqual(a["started_ms"], a["ended_ms"])
        self.assertLess(abs(a["ended_ms"] / 1000.0 - time.time()), 60)

        # The table names the caller and the outcome, never the patient nor a UID.
        table = self.audit(n)
        line = [l for l in table.splitlines() if "MODALITY1" in l]
        self.assertEqual(len(line), 1, table)
        self.assertIn("127.0.0.1", line[0])
        self.assertIn("released", line[0])
        self.assertRegex(line[0], r"\s3\s+0\s+released$")
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        for secret in (PATIENT, "Audit", str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)):
            self.assertNotIn(secret, table)
        # Nor does the log at the default level.
        self.assertNotIn(str(ds.SOPInstanceUID), n.log())
        self.assertNotIn(PATIENT, n.log())

        j = self.audit_json(n)
        mine = [x for x in j["associations"] if x["calling_ae"] == "MODALITY1"]
        self.assertEqual(len(mine), 1, j)
        self.assertEqual(set(mine[0]), {"started", "ended", "calling_ae", "called_ae", "address",
                                        "tls_peer", "stored", "refused", "outcome"})
        self.assertEqual((mine[0]["stored"], mine[0]["outcome"], mine[0]["tls_peer"]),
                         (3, "released", None))
        self.assertEqual(j["results"], [])
        self.assertEqual(n.stop(), 0)

    def test_a_caller_not_allowed_is_audited_as_rejected(self):
        n = self.node(allowed_callers=["GOOD"])
        n.start()
        r = harness.echoscu(n.port, ae_called=n.ae, ae_calling="INTRUDER", check=False)
        self.assertNotEqual(r.returncode, 0)
        r = harness.echoscu(n.port, ae_called="NOTAINODE", ae_calling="GOOD", check=False)
        self.assertNotEqual(r.returncode, 0)
        rows = wait_rows(n, "audit_associations", "calling_ae=?", ("INTRUDER",))
        self.assertEqual((rows[0]["outcome"], rows[0]["address"], rows[0]["stored"]),
                         ("rejected: calling AE title not allowed", "127.0.0.1", 0))
        rows = wait_rows(n, "audit_associations", "called_ae=?", ("NOTAINODE",))
        self.assertEqual(rows[0]["outcome"], "rejected: called AE title not ours")
        self.assertIn("rejected: calling AE title not allowed", self.audit(n))
        self.assertEqual(n.stop(), 0)

    def test_an_abort_mid_association_is_audited_with_the_stores_so_far(self):
        n = self.node()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16)
        a = rawscu.Association(n.port, called=n.ae, calling="ABORTER")
        for f in files[:2]:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            self.assertEqual(a.store(rawscu.CT_STORAGE, str(ds.SOPInstanceUID),
                                     harness.dataset_bytes(f)), 0)
        # One the node cannot use: refused, and counted as such.
        self.assertEqual(a.store(rawscu.CT_STORAGE, "1.2.3.4", os.urandom(2000)), 0xC000)
        a.abort()
        rows = wait_rows(n, "audit_associations", "calling_ae=?", ("ABORTER",))
        self.assertEqual((rows[0]["stored"], rows[0]["refused"], rows[0]["outcome"]),
                         (2, 1, "aborted by peer"))

        # A connection cut without a word after one store is audited too.
        b = rawscu.Association(n.port, called=n.ae, calling="CUTTER")
        ds = pydicom.dcmread(files[2], stop_before_pixels=True)
        self.assertEqual(b.store(rawscu.CT_STORAGE, str(ds.SOPInstanceUID),
                                 harness.dataset_bytes(files[2])), 0)
        b.close()
        rows = wait_rows(n, "audit_associations", "calling_ae=?", ("CUTTER",))
        self.assertEqual((rows[0]["stored"], rows[0]["outcome"]), (1, "aborted by peer"))

        # An abort in the middle of a data set: nothing of it counted.
        c = rawscu.Association(n.port, called=n.ae, calling="MIDWAY")
        pcid = c.context_for(rawscu.CT_STORAGE)
        c.message_id += 1
        c._send_pdv(pcid, rawscu._command([
            (0x0002, rawscu._even_uid(rawscu.CT_STORAGE)), (0x0100, rawscu._us(0x0001)),
            (0x0110, rawscu._us(c.message_id)), (0x0700, rawscu._us(0)),
            (0x0800, rawscu._us(0x0000)), (0x1000, rawscu._even_uid("1.2.3.4"))]), True)
        # The first fragment of a data set, not the last one.
        c.send_pdu(0x04, struct.pack(">IBB", 2 + 100, pcid, 0) + b"\0" * 100)
        time.sleep(0.3)
        c.abort()
        rows = wait_rows(n, "audit_associations", "calling_ae=?", ("MIDWAY",))
        self.assertEqual((rows[0]["stored"], rows[0]["refused"], rows[0]["outcome"]),
                         (0, 0, "aborted by peer"))
        self.assertEqual(n.stop(), 0)

    def test_forwarded_instances_are_audited_as_sent(self):
        archive_dir = os.path.join(self.workdir, "archive")
        with harness.StoreSCP(archive_dir, aet="ARCHIVE") as archive:
            sections = {
                "destinations": {"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1",
                                             "port": archive.port}},
                "rules": [{"name": "mr", "match": {"Modality": "MR"},
                           "forward_to": ["archive"]}],
            }
            n = self.node(sections=sections, stable_seconds=1)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, "mr"), 3, rows=16, cols=16,
                                   modality="MR")
            harness.storescu(n.port, files, ae_called=n.ae)
            rows = wait_rows(n, "audit_results", "1", count=3, timeout=60)
            self.assertEqual(len(rows), 3, rows)
            sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                    for f in files}
            self.assertEqual({r["sop_instance_uid"] for r in rows}, sops)
            for r in rows:
                self.assertEqual((r["kind"], r["destination"], r["peer"], r["outcome"],
                                  r["attempts"], r["error"]),
                                 ("forward", "archive", "ARCHIVE@127.0.0.1:%d" % archive.port,
                                  "sent", 1, None))
            self.assertEqual(len(archive.files()), 3)
            table = self.audit(n)
            self.assertIn("3 sends of results or forwarded instances", table)
            for sop in sops:
                self.assertNotIn(sop, table)
            j = self.audit_json(n)
            self.assertEqual({r["sop_instance_uid"] for r in j["results"]}, sops)
            self.assertEqual({r["outcome"] for r in j["results"]}, {"sent"})
            self.assertEqual(n.stop(), 0)

    def test_a_refusing_destination_is_audited_transient_then_dead_lettered_or_permanent(self):
        full = RawSCP(os.path.join(self.workdir, "full.log"), "--status", "0xA700")
        cannot = RawSCP(os.path.join(self.workdir, "cannot.log"), "--status", "0xC000")
        try:
            sections = {
                "destinations": {
                    "full": {"ae_title": "FULL", "host": "127.0.0.1", "port": full.port,
                             "retry_initial_seconds": 1, "max_attempts": 2},
                    "cannot": {"ae_title": "CANNOT", "host": "127.0.0.1", "port": cannot.port},
                },
                "rules": [{"name": "mr", "match": {"Modality": "MR"},
                           "forward_to": ["full", "cannot"]}],
            }
            n = self.node(sections=sections, stable_seconds=1)
            n.start()
            files = make_ct_series(os.path.join(self.workdir, "mr"), 1, rows=16, cols=16,
                                   modality="MR")
            harness.storescu(n.port, files, ae_called=n.ae)
            rows = wait_rows(n, "audit_results", "destination='full'", count=2, timeout=60)
            self.assertEqual([(r["outcome"], r["attempts"]) for r in rows],
                             [("transient", 1), ("dead-lettered", 2)])
            self.assertIn("0xa700", rows[0]["error"].lower())
            rows = wait_rows(n, "audit_results", "destination='cannot'", timeout=30)
            self.assertEqual([(r["outcome"], r["attempts"]) for r in rows], [("permanent", 1)])
            self.assertIn("0xc000", rows[0]["error"].lower())
            self.assertEqual(rows[0]["peer"], "CANNOT@127.0.0.1:%d" % cannot.port)
            self.assertEqual(n.stop(), 0)
        finally:
            full.stop()
            cannot.stop()

    def test_since_filters_the_json_and_the_table(self):
        n = self.node()
        n.start()
        harness.echoscu(n.port, ae_called=n.ae, ae_calling="EARLY")
        wait_rows(n, "audit_associations", "calling_ae='EARLY'")
        # The next whole second (UTC): EARLY is before it, LATE after.
        now = datetime.datetime.now(datetime.timezone.utc)
        boundary = now.replace(microsecond=0) + datetime.timedelta(seconds=1)
        time.sleep((boundary - now).total_seconds() + 0.05)
        harness.echoscu(n.port, ae_called=n.ae, ae_calling="LATE")
        wait_rows(n, "audit_associations", "calling_ae='LATE'")

        def callers(*args):
            return [a["calling_ae"] for a in self.audit_json(n, *args)["associations"]]

        since = boundary.strftime("%Y-%m-%dT%H:%M:%S")
        self.assertEqual(callers("--since", since), ["LATE"])
        self.assertEqual(callers("--since", since + "Z"), ["LATE"])
        self.assertIn("EARLY", callers("--since", "1h"))
        self.assertIn("LATE", callers("--since", "1h"))
        self.assertIn("EARLY", callers("--since", now.strftime("%Y-%m-%d")))
        tomorrow = (now + datetime.timedelta(days=1)).strftime("%Y-%m-%d")
        self.assertEqual(callers("--since", tomorrow), [])
        table = self.audit(n, "--since", since)
        self.assertIn("LATE", table)
        self.assertNotIn("EARLY", table)
        self.assertIn("1 association\n", table)

        for bad in ("yesterday", "2026-13-01", "2026-02-30", "12h30", "-1d", "2026-12-01T25:00"):
            r = n.cli("audit", "-c", n.config_path, "--since", bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("--since", r.stderr)
        r = n.cli("status", "-c", n.config_path, "--since", "yesterday")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--since", r.stderr)
        self.assertEqual(n.stop(), 0)

    def test_audit_rows_go_after_their_own_retention_whatever_the_studies(self):
        # Studies are kept for ever (the defaults); audit rows for 30 days.
        n = self.node(audit_retention_days=30)
        n.start()
        self.assertEqual(n.stop(), 0)
        day = 86400 * 1000
        now = int(time.time() * 1000)
        con = sqlite3.connect(n.db_path)
        with con:
            for calling, age in (("OLD", 31), ("RECENT", 29)):
                con.execute("INSERT INTO audit_associations(started_ms, ended_ms, calling_ae,"
                            " called_ae, address, stored, refused, outcome)"
                            " VALUES(?, ?, ?, 'AINODE', '127.0.0.1', 0, 0, 'released')",
                            (now - age * day, now - age * day + 10, calling))
            con.execute("INSERT INTO audit_results(time_ms, kind, destination, outcome,"
                        " attempts) VALUES(?, 'seg', 'pacs', 'sent', 1)", (now - 31 * day,))
        con.close()
        n.start()
        harness.wait_until(lambda: not audit_rows(n, "audit_associations", "calling_ae='OLD'"),
                           30, 0.2, "the old audit row to go")
        self.assertEqual(len(audit_rows(n, "audit_associations", "calling_ae='RECENT'")), 1)
        self.assertEqual(audit_rows(n, "audit_results"), [])
        harness.wait_until(lambda: "retention: 2 audit rows older than 30 days deleted"
                           in n.log(), 10, 0.2, "the retention line")
        self.assertEqual(n.stop(), 0)

    def test_tls_callers_are_audited_with_their_certificate_subject(self):
        harness.require_tool("openssl")
        p = make_pki(os.path.join(self.workdir, "pki"))
        port, tls_port = harness.free_port(), harness.free_port()
        while tls_port == port:
            tls_port = harness.free_port()
        n = self.node(port=port, tls={"port": tls_port, "certificate": p.server_crt,
                                      "private_key": p.server_key, "ca_certificates": p.ca,
                                      "verify_client": "required"})
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=16, cols=16)
        r = harness.storescu(tls_port, files, ae_called=n.ae, ae_calling="TLSCALLER",
                             extra=["+tls", p.client_key, p.client_crt, "+cf", p.ca])
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 2), r.stdout)
        rows = wait_rows(n, "audit_associations", "calling_ae='TLSCALLER'")
        self.assertEqual((rows[0]["tls_peer"], rows[0]["stored"], rows[0]["outcome"]),
                         ("/CN=test client", 2, "released"))
        # A plain caller has none.
        harness.echoscu(n.port, ae_called=n.ae, ae_calling="PLAIN")
        rows = wait_rows(n, "audit_associations", "calling_ae='PLAIN'")
        self.assertIsNone(rows[0]["tls_peer"])
        # A certificate of another CA is refused at the handshake: audited too.
        r = harness.echoscu(tls_port, ae_called=n.ae, ae_calling="ROGUE",
                            extra=["+tls", p.rogue_key, p.rogue_crt, "+cf", p.ca], check=False)
        self.assertNotEqual(r.returncode, 0)
        rows = wait_rows(n, "audit_associations", "outcome LIKE 'rejected: TLS: %'")
        self.assertEqual((rows[0]["calling_ae"], rows[0]["address"], rows[0]["tls_peer"]),
                         ("", "127.0.0.1", "(handshake failed)"))
        self.assertIn("certificate verify failed", rows[0]["outcome"])
        j = self.audit_json(n)
        self.assertIn("/CN=test client", [a["tls_peer"] for a in j["associations"]])
        self.assertEqual(n.stop(), 0)

    def test_audit_of_a_node_that_never_ran_is_empty(self):
        n = self.node()
        j = self.audit_json(n)
        self.assertEqual(j, {"associations": [], "results": []})
        self.assertIn("0 associations", self.audit(n))


if __name__ == "__main__":
    unittest.main()
