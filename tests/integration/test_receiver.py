#!/usr/bin/python3
"""Integration tests of the receiver: the real ainode binary on a loopback
port, spoken to by DCMTK's echoscu, storescu and dcmsend (and, where those
cannot express a case, by rawscu, a small client of our own over the real
protocol). Run one with:
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_receiver.ReceiverTest.test_x
"""

import glob
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (also puts tests/tools on sys.path)
import rawscu  # noqa: E402
from gen_series import make_ct_series, make_study  # noqa: E402

import pydicom  # noqa: E402

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")

# python3-pydicom's test files in the encodings a PACS really sends.
# dcmsend -dn proposes each compressed file's own transfer syntax and never
# decompresses it; DCMTK's senders propose uncompressed files as explicit
# little endian first, so implicit and big endian go with storescu flags that
# make the sender want exactly that encoding.
CODEC_FILES = [
    "CT_small.dcm",                      # explicit VR little endian
    "image_dfl.dcm",                     # deflated explicit little endian
    "SC_rgb_jpeg_dcmtk.dcm",             # JPEG baseline (process 1)
    "JPGExtended.dcm",                   # JPEG extended (process 2/4)
    "SC_rgb_jpeg_gdcm.dcm",              # JPEG lossless SV1 (process 14)
    "MR_small_jpeg_ls_lossless.dcm",     # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",         # JPEG 2000 lossless
    "JPEG2000.dcm",                      # JPEG 2000
    "MR_small_RLE.dcm",                  # RLE lossless
    "SC_rgb_rle_16bit_2frame.dcm",       # RLE, multi-frame
    "liver_1frame.dcm",                  # Segmentation (a non-image storage class)
    "test-SR.dcm",                       # Comprehensive SR
]
# (file, storescu flag making the sender want its encoding, storescp flag
#  making the reference accept it)
UNCOMPRESSED_FILES = [
    ("MR_small_implicit.dcm", "-xi", "+xi"),   # implicit VR little endian
    ("MR_small_bigendian.dcm", "-xb", "+xb"),  # explicit VR big endian
]


DEFLATED = "1.2.840.10008.1.2.1.99"


def inflate(data):
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)


def db_rows(node, sql, args=()):
    con = sqlite3.connect("file:%s?mode=ro" % node.db_path, uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def stored_path(node, sop_uid):
    rows = db_rows(node, "SELECT path FROM instances WHERE sop_instance_uid=?", (sop_uid,))
    return rows[0][0] if rows else None


def files_by_sop(directory):
    """{SOP Instance UID: path} of the DICOM files under DIRECTORY."""
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for p in harness.list_files(directory)}


def meta_transfer_syntax(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


# How the node refuses an association, by cause: the echoscu and rawscu
# arguments that provoke it, the words echoscu prints, and the A-ASSOCIATE-RJ
# (result, source, reason) rawscu receives.
REJECTIONS = {
    "unknown called AE": (dict(ae_called="NOTAINODE"), dict(called="NOTAINODE"),
                          "Rejected Permanent", "Called AE Title Not Recognized", (1, 1, 7)),
    "caller not allowed": (dict(ae_calling="INTRUDER"), dict(calling="INTRUDER"),
                           "Rejected Permanent", "Calling AE Title Not Recognized", (1, 1, 3)),
    "over the limit": (dict(), dict(), "Rejected Transient", "Local Limit Exceeded", (2, 3, 2)),
}



def _iso_ms(text):
    """Milliseconds since the epoch of an ISO 8601 UTC time as status prints it."""
    import datetime
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000.0

class NodeTestCase(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="ainode-it-")
        self.binary = harness.default_binary()
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            if n.running():
                n.kill9()
        if self._outcome_ok():
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print("\nkept %s for inspection" % self.workdir, file=sys.stderr)
            for n in self.nodes:
                print("--- node log ---\n" + n.log_tail(), file=sys.stderr)

    def _outcome_ok(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        return not any(t is self for t, _ in result.errors + result.failures)

    def node(self, name="node", **overrides):
        n = harness.Node(self.binary, os.path.join(self.workdir, name), **overrides)
        self.nodes.append(n)
        return n

    def assert_store_clean(self, node):
        """Index and files agree: no orphan row, no orphan file, no temp file."""
        rows = db_rows(node, "SELECT path, size FROM instances")
        files = set(node.stored_files())
        self.assertEqual({p for p, _ in rows}, files)
        for path, size in rows:
            self.assertEqual(os.path.getsize(path), size, path)
        self.assertEqual(os.listdir(os.path.join(node.data_dir, "tmp")), [])


class ReceiverTest(NodeTestCase):
    def assert_rejected(self, n, cause):
        """echoscu and rawscu are both refused by N for CAUSE (see REJECTIONS);
        returns how long echoscu took."""
        echo, raw, kind, words, rj = REJECTIONS[cause]
        t0 = time.monotonic()
        r = harness.echoscu(n.port, **dict(dict(ae_called=n.ae), **echo), check=False)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0, cause)
        self.assertIn(kind, r.stdout)
        self.assertIn(words, r.stdout)
        with self.assertRaises(rawscu.Rejected) as cm:
            rawscu.Association(n.port, **raw)
        self.assertEqual((cm.exception.result, cm.exception.source, cm.exception.reason), rj)
        return took

    # --- association ------------------------------------------------------
    def test_echo_is_answered(self):
        n = self.node()
        n.start()
        r = harness.echoscu(n.port, ae_called=n.ae, check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(n.stop(), 0)

    def test_wrong_called_ae_is_rejected(self):
        n = self.node()
        n.start()
        self.assert_rejected(n, "unknown called AE")

    def test_caller_outside_allowed_list_is_rejected(self):
        n = self.node(allowed_callers=["MODALITY1", "PACS"])
        n.start()
        self.assert_rejected(n, "caller not allowed")
        r = harness.echoscu(n.port, ae_called=n.ae, ae_calling="PACS", check=False)
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_one_association_over_the_limit_is_refused_not_hung(self):
        n = self.node(max_associations=2)
        n.start()
        held = [rawscu.Association(n.port) for _ in range(2)]
        self.assertLess(self.assert_rejected(n, "over the limit"), 5)
        # The held associations still work, and a freed slot is usable again.
        self.assertEqual(held[0].echo(), 0)
        self.assertTrue(held[0].release())
        harness.wait_until(lambda: harness.echoscu(n.port, ae_called=n.ae,
                                                   check=False).returncode == 0,
                           10, 0.1, "a free association slot")
        held[1].release()
        self.assertEqual(n.stop(), 0)

    def test_only_classes_stored_under_a_study_are_accepted(self):
        n = self.node()
        n.start()
        accepted = {
            rawscu.VERIFICATION: True,
            rawscu.CT_STORAGE: True,
            "1.2.840.10008.5.1.4.1.1.66.4": True,    # Segmentation Storage
            "1.2.840.10008.5.1.4.1.1.999.1": True,   # newer than DCMTK's list, under the root
            "1.2.840.10008.5.1.4.38.1": False,       # Hanging Protocol Storage (non-patient)
            "1.2.840.10008.5.1.4.39.1": False,       # Color Palette Storage (non-patient)
            "1.2.840.10008.5.1.4.1.1.200.1": False,  # CT Defined Procedure Protocol (non-patient)
            "1.2.840.10008.5.1.4.1.1.200.4": False,  # its FIND model, under the root
            "1.2.840.10008.5.1.4.1.2.2.1": False,    # Study Root Query/Retrieve FIND
        }
        a = rawscu.Association(n.port, contexts=[(uid, [rawscu.EXPLICIT_LE])
                                                 for uid in accepted])
        got = {uid: pcid in a.accepted for pcid, uid in a.proposed.items()}
        self.assertTrue(a.release())
        self.assertEqual(got, accepted)
        self.assertEqual(n.stop(), 0)

    # --- storing ----------------------------------------------------------
    def test_three_series_study_is_stored_as_sent_and_indexed(self):
        n = self.node()
        n.start()
        study = make_study(os.path.join(self.workdir, "in"), [
            dict(modality="CT", slices=6, rows=64, cols=64, series_description="AX 1mm",
                 body_part="CHEST", protocol_name="CHEST_ROUTINE"),
            dict(modality="CT", slices=4, rows=64, cols=64, series_description="COR",
                 body_part="CHEST", protocol_name="CHEST_ROUTINE"),
            dict(modality="MR", slices=3, rows=32, cols=32, series_description="T1",
                 body_part="HEAD", protocol_name="BRAIN"),
        ], study_description="CHEST CT + MR")
        files = [f for s in study["series"] for f in s["files"]]
        # The same association to DCMTK's bit-preserving storescp gives the
        # reference: exactly the bytes that went over the wire.
        with harness.StoreSCP(os.path.join(self.workdir, "ref"), extra=["-B"]) as ref:
            harness.storescu(ref.port, files, ae_called=ref.aet, ae_calling="MODALITY1")
        r = harness.storescu(n.port, files, ae_called=n.ae, ae_calling="MODALITY1")
        self.assertTrue(harness.all_stores_succeeded(r.stdout, len(files)), r.stdout)

        ref_by_sop = files_by_sop(os.path.join(self.workdir, "ref"))
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            path = stored_path(n, ds.SOPInstanceUID)
            self.assertIsNotNone(path, f)
            self.assertEqual(harness.dataset_bytes(path),
                             harness.dataset_bytes(ref_by_sop[ds.SOPInstanceUID]), f)
            row = db_rows(n, """
                SELECT i.sop_class_uid, i.transfer_syntax, i.calling_ae, i.called_ae,
                       i.source_addr, i.size, i.rows, s.modality, s.body_part_examined,
                       s.series_description, s.protocol_name, s.manufacturer,
                       st.study_description, st.study_uid, s.series_uid
                FROM instances i JOIN series s USING(series_uid)
                JOIN studies st USING(study_uid) WHERE i.sop_instance_uid=?""",
                          (ds.SOPInstanceUID,))[0]
            self.assertEqual(row, (ds.SOPClassUID, meta_transfer_syntax(f), "MODALITY1",
                                   "AINODE", "127.0.0.1", os.path.getsize(path), ds.Rows,
                                   ds.Modality, ds.BodyPartExamined, ds.SeriesDescription,
                                   ds.ProtocolName, ds.Manufacturer, ds.StudyDescription,
                                   ds.StudyInstanceUID, ds.SeriesInstanceUID))
        s = n.wait_for_study(study["study_uid"], instances=13)
        self.assertEqual(s["series"], 3)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_compressed_and_unusual_encodings_are_stored_bit_exact(self):
        n = self.node()
        n.start()
        # Several of these files share a SOP Instance UID; each copy gets a
        # fresh one (the encoded pixel data is written back untouched).
        def fresh_copy(name):
            ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, name))
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = os.path.join(self.workdir, name)
            ds.save_as(path, write_like_original=True)
            return path

        ref_dir = os.path.join(self.workdir, "ref")
        files = [fresh_copy(name) for name in CODEC_FILES]
        # The reference is DCMTK's storescp in bit-preserving mode (-B): it
        # records exactly the bytes that went over the wire.
        with harness.StoreSCP(ref_dir, extra=["-B", "+xa"]) as ref:
            harness.dcmsend(ref.port, files, ae_called=ref.aet, extra=["-dn"])
        r = harness.dcmsend(n.port, files, ae_called=n.ae, extra=["-dn"], check=False)
        self.assertIn("with status SUCCESS  : %d" % len(files), r.stdout)
        for name, scu_flag, scp_flag in UNCOMPRESSED_FILES:
            path = fresh_copy(name)
            files.append(path)
            with harness.StoreSCP(ref_dir, extra=["-B", scp_flag]) as ref:
                harness.storescu(ref.port, path, ae_called=ref.aet, extra=[scu_flag])
            r = harness.storescu(n.port, path, ae_called=n.ae, extra=[scu_flag])
            self.assertTrue(harness.all_stores_succeeded(r.stdout, 1), r.stdout)

        ref_by_sop = files_by_sop(ref_dir)
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            path = stored_path(n, ds.SOPInstanceUID)
            self.assertIsNotNone(path, f)
            # Not transcoded: the file's own transfer syntax, in the file
            # and in the index.
            want_ts = meta_transfer_syntax(f)
            self.assertEqual(meta_transfer_syntax(path), want_ts, f)
            self.assertEqual(db_rows(n, "SELECT transfer_syntax FROM instances"
                                        " WHERE sop_instance_uid=?",
                                     (ds.SOPInstanceUID,))[0][0], want_ts)
            got = harness.dataset_bytes(path)
            want = harness.dataset_bytes(ref_by_sop[ds.SOPInstanceUID])
            if want_ts == DEFLATED:
                # The wire carries the deflate stream padded to even length;
                # storescp drops that pad byte, ainode keeps what arrived.
                self.assertIn(got, (want, want + b"\0"), f)
                self.assertEqual(inflate(got), inflate(want), f)
            else:
                self.assertEqual(got, want, f)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_resent_instance_replaces_the_stored_one(self):
        n = self.node()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=16, cols=16)
        harness.storescu(n.port, files, ae_called=n.ae)
        ds = pydicom.dcmread(files[0])
        ds.SeriesDescription = "CORRECTED"
        ds.save_as(files[0], write_like_original=True)
        r = harness.storescu(n.port, files[0], ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 1), r.stdout)
        self.assertEqual(n.instances_total(), 2)
        path = stored_path(n, ds.SOPInstanceUID)
        self.assertEqual(pydicom.dcmread(path).SeriesDescription, "CORRECTED")
        self.assert_store_clean(n)

    def test_a_known_uid_resent_under_another_study_or_patient_is_refused(self):
        n = self.node()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16)
        r = harness.storescu(n.port, files, ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 3), r.stdout)
        original = pydicom.dcmread(files[0])
        study = str(original.StudyInstanceUID)
        path = stored_path(n, original.SOPInstanceUID)
        with open(path, "rb") as f:
            before = f.read()
        self.assertEqual(n.studies()[study]["instances"], 3)

        # The same instance rewritten into another study and patient; the
        # same series re-used in another study; the same Patient ID under
        # another name.
        def rewritten(name, **values):
            ds = pydicom.dcmread(files[0])
            for k, v in values.items():
                setattr(ds, k, v)
            p = os.path.join(self.workdir, name + ".dcm")
            ds.save_as(p, write_like_original=True)
            return p
        hostile = [
            rewritten("other_study", StudyInstanceUID=pydicom.uid.generate_uid(),
                      SeriesInstanceUID=pydicom.uid.generate_uid(), PatientID="INTRUDER",
                      PatientName="Other^Patient"),
            rewritten("other_series_study", StudyInstanceUID=pydicom.uid.generate_uid(),
                      SOPInstanceUID=pydicom.uid.generate_uid()),
            rewritten("renamed", StudyInstanceUID=pydicom.uid.generate_uid(),
                      SeriesInstanceUID=pydicom.uid.generate_uid(),
                      SOPInstanceUID=pydicom.uid.generate_uid(), PatientName="Renamed^Patient"),
        ]
        for p in hostile:
            r = harness.storescu(n.port, p, ae_called=n.ae, check=False)
            self.assertEqual(harness.storescu_statuses(r.stdout), ["Error: CannotUnderstand"],
                             r.stdout)
        studies = n.studies()
        self.assertEqual(list(studies), [study])
        self.assertEqual(studies[study]["instances"], 3)
        self.assertEqual(stored_path(n, original.SOPInstanceUID), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(db_rows(n, "SELECT patient_id, patient_name FROM patients"),
                         [(str(original.PatientID), str(original.PatientName))])
        self.assert_store_clean(n)
        # The log says what conflicted, naming attributes, not values.
        log = n.log_tail()
        self.assertIn("SOPInstanceUID already stored in another study", log)
        self.assertIn("SeriesInstanceUID already stored in another study", log)
        self.assertIn("PatientID already stored with another PatientName", log)
        self.assertNotIn("Renamed^Patient", log)
        self.assertEqual(n.stop(), 0)

    def test_with_the_quarantine_policy_a_contradicting_instance_is_kept_aside(self):
        n = self.node(integrity_conflicts="quarantine")
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=16, cols=16)
        r = harness.storescu(n.port, files, ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 2), r.stdout)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        ds = pydicom.dcmread(files[0])
        ds.StudyInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        hostile = os.path.join(self.workdir, "other_study.dcm")
        ds.save_as(hostile, write_like_original=True)
        r = harness.storescu(n.port, hostile, ae_called=n.ae, check=False)
        self.assertEqual(harness.storescu_statuses(r.stdout), ["Error: CannotUnderstand"],
                         r.stdout)
        # Refused all the same, and the stored study is unchanged; the file
        # is kept, unindexed, for review.
        studies = n.studies()
        self.assertEqual(list(studies), [study])
        self.assertEqual(studies[study]["instances"], 2)
        kept = harness.list_files(os.path.join(n.data_dir, "quarantine"))
        self.assertEqual(len(kept), 1, kept)
        self.assertEqual(harness.dataset_bytes(kept[0]), harness.dataset_bytes(hostile))
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_received_files_and_the_database_are_private(self):
        n = self.node(create_data_dir=False)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 2, rows=16, cols=16)
        r = harness.storescu(n.port, files, ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 2), r.stdout)

        def mode(path):
            return os.stat(path).st_mode & 0o7777
        self.assertEqual(mode(n.data_dir), 0o750)
        path = stored_path(n, pydicom.dcmread(files[0]).SOPInstanceUID)
        self.assertEqual(mode(path), 0o640)
        self.assertEqual(mode(os.path.dirname(path)), 0o750)
        self.assertEqual(mode(os.path.dirname(os.path.dirname(path))), 0o750)
        for name in ("ainode.db", "ainode.db-wal", "ainode.db-shm"):
            self.assertEqual(mode(os.path.join(n.data_dir, name)), 0o640, name)
        for name in ("tmp", "instances"):
            self.assertEqual(mode(os.path.join(n.data_dir, name)), 0o750, name)
        self.assertEqual(n.stop(), 0)

        # A data directory every user may write in is refused, naming it
        # and its mode; one every user may read is used, with a warning.
        os.chmod(n.data_dir, 0o777)
        with self.assertRaises(harness.NodeError) as e:
            n.start()
        self.assertIn("the data directory %s has mode 0777" % n.data_dir, str(e.exception))
        os.chmod(n.data_dir, 0o755)
        n.start()
        self.assertIn("the data directory %s has mode 0755" % n.data_dir, n.log())
        self.assertEqual(n.stop(), 0)

    def test_eight_concurrent_associations_lose_and_duplicate_nothing(self):
        n = self.node()
        n.start()
        senders = []
        sent = set()
        for i in range(8):
            files = make_ct_series(os.path.join(self.workdir, "in%d" % i), 25, rows=64, cols=64,
                                   seed=i)
            sent |= {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                     for f in files}
            cmd = [harness.require_tool("storescu"), "-v", "-aet", "SENDER%d" % i, "-aec", n.ae, "127.0.0.1",
                   str(n.port)] + files
            senders.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True,
                                            env=harness.dcmtk_env()))
        for p in senders:
            out, _ = p.communicate(timeout=120)
            self.assertTrue(harness.all_stores_succeeded(out, 25), out)
        rows = db_rows(n, "SELECT sop_instance_uid FROM instances")
        self.assertEqual(len(rows), 200)
        self.assertEqual({r[0] for r in rows}, sent)
        self.assertEqual(len(n.stored_files()), 200)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_kill9_mid_series_keeps_every_acknowledged_instance(self):
        n = self.node(stable_seconds=60)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 400, rows=256, cols=256)
        cmd = [harness.require_tool("storescu"), "-v", "-aec", n.ae, "127.0.0.1",
               str(n.port)] + files
        sender = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=harness.dcmtk_env())
        out = []
        reader = threading.Thread(target=lambda: out.append(sender.stdout.read()))
        reader.start()
        harness.wait_until(lambda: len(glob.glob(os.path.join(
            n.data_dir, "instances", "*", "*", "*.dcm"))) >= 40, 60, 0.005, "40 instances")
        n.kill9()
        sender.wait(timeout=60)
        reader.join()
        acked = [f for f, s in harness.storescu_file_statuses(out[0]).items() if s == "Success"]
        self.assertGreaterEqual(len(acked), 30)
        self.assertLess(len(acked), len(files), "the kill came too late to test anything")

        n.start()
        for f in acked:
            want = pydicom.dcmread(f)
            path = stored_path(n, want.SOPInstanceUID)
            self.assertIsNotNone(path, "acknowledged instance lost: " + f)
            got = pydicom.dcmread(path)
            self.assertEqual(got, want, f)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_rows_lost_to_a_power_cut_are_rebuilt_from_the_files(self):
        # Rows are committed without waiting for the disk; a power cut can
        # take the last ones. Deleting them from the stopped node's index
        # stands in for that: the durable files must bring them back.
        n = self.node()
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 5, rows=16, cols=16)
        harness.storescu(n.port, files, ae_called=n.ae, ae_calling="MODALITY1")
        n.kill9()
        lost = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                for f in files[2:]]
        con = sqlite3.connect(n.db_path)
        con.executemany("DELETE FROM instances WHERE sop_instance_uid=?", [(u,) for u in lost])
        con.commit()
        con.close()
        n.start()
        self.assertIn("3 instance files indexed again", n.log())
        for uid in lost:
            row = db_rows(n, "SELECT calling_ae, sop_class_uid, transfer_syntax FROM instances"
                             " WHERE sop_instance_uid=?", (uid,))
            self.assertEqual(row, [("MODALITY1", "1.2.840.10008.5.1.4.1.1.2",
                                    "1.2.840.10008.1.2.1")])
        self.assertEqual(n.instances_total(), 5)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_unusable_data_sets_are_refused_and_leave_nothing(self):
        n = self.node()
        n.start()
        good = os.path.join(PYDICOM_FILES, "CT_small.dcm")
        ds = pydicom.dcmread(good)
        raw = harness.dataset_bytes(good)

        no_study = ds.copy()
        del no_study.StudyInstanceUID
        traversal = ds.copy()
        traversal.StudyInstanceUID = "../../../../tmp/evil"
        crafted = {}
        for name, d in (("no_study", no_study), ("traversal", traversal)):
            p = os.path.join(self.workdir, name + ".dcm")
            d.save_as(p, write_like_original=False)
            crafted[name] = harness.dataset_bytes(p)

        a = rawscu.Association(n.port)
        cases = [
            ("garbage", ds.SOPInstanceUID, os.urandom(4000)),
            ("truncated in pixel data", ds.SOPInstanceUID, raw[:len(raw) - 1000]),
            ("truncated in header", ds.SOPInstanceUID, raw[:800]),
            ("instance UID differs from command", "1.2.3.4", raw),
            ("no StudyInstanceUID", ds.SOPInstanceUID, crafted["no_study"]),
            ("UID with a path in it", ds.SOPInstanceUID, crafted["traversal"]),
        ]
        for name, sop, data in cases:
            self.assertEqual(a.store(rawscu.CT_STORAGE, sop, data), 0xC000, name)
        self.assertEqual(db_rows(n, "SELECT count(*) FROM instances")[0][0], 0)
        self.assertEqual(n.stored_files(), [])
        self.assertFalse(os.path.exists("/tmp/evil"))
        self.assert_store_clean(n)
        # The same association, and new ones, keep working.
        self.assertEqual(a.store(rawscu.CT_STORAGE, ds.SOPInstanceUID, raw), 0)
        a.release()
        r = harness.dcmsend(n.port, good, ae_called=n.ae, check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(len(n.stored_files()), 1)
        self.assertEqual(n.stop(), 0)

    def test_failed_write_answers_out_of_resources_and_leaves_nothing(self):
        # A file size limit on the node makes writing a large instance fail
        # the way a full disk does (EFBIG instead of ENOSPC).
        big = make_ct_series(os.path.join(self.workdir, "big"), 1, rows=2048, cols=2048)
        small = make_ct_series(os.path.join(self.workdir, "small"), 1, rows=16, cols=16)
        n = self.node()
        limit = 4 << 20
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
        try:
            n.start()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
        r = harness.storescu(n.port, big, ae_called=n.ae, check=False)
        self.assertEqual(harness.storescu_statuses(r.stdout), ["Refused: OutOfResources"],
                         r.stdout)
        self.assertEqual(n.stored_files(), [])
        self.assertEqual(os.listdir(os.path.join(n.data_dir, "tmp")), [])
        r = harness.storescu(n.port, small, ae_called=n.ae)
        self.assertTrue(harness.all_stores_succeeded(r.stdout, 1), r.stdout)
        self.assert_store_clean(n)
        self.assertEqual(n.stop(), 0)

    def test_missing_uid_is_a_failure_status_for_dcmsend(self):
        n = self.node()
        n.start()
        ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, "CT_small.dcm"))
        del ds.SeriesInstanceUID
        p = os.path.join(self.workdir, "no_series.dcm")
        ds.save_as(p, write_like_original=False)
        r = harness.dcmsend(n.port, p, ae_called=n.ae, check=False)
        self.assertIn("Received C-STORE Response (Error: CannotUnderstand)", r.stdout)
        self.assertEqual(n.stored_files(), [])
        self.assertEqual(n.stop(), 0)

    # --- study completion -------------------------------------------------
    def test_study_completes_after_stable_seconds(self):
        n = self.node(stable_seconds=2)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        harness.storescu(n.port, files, ae_called=n.ae)
        s = n.wait_for_study(study, state="complete", timeout=30)
        # Measured on the node's own clock (the times it records), so a slow
        # machine running `ainode status` late cannot blur the figure.
        idle = (_iso_ms(s["completed"]) - _iso_ms(s["last_received"])) / 1000.0
        self.assertGreaterEqual(idle, 2.0)
        self.assertLess(idle, 4.0)
        self.assertEqual(n.stop(), 0)

    def test_half_received_study_completes_after_a_crash_and_restart(self):
        # 6 s: a loaded machine may take seconds to answer a status.
        n = self.node(stable_seconds=6)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        harness.storescu(n.port, files, ae_called=n.ae)
        n.kill9()
        self.assertEqual(n.studies()[study]["state"], "receiving")
        time.sleep(6.5)
        n.start()
        # The time the node was down is no silence of the sender's: the
        # study waits stable_seconds from the start, for a resend of what
        # the crash cut short, then completes.
        t0 = time.monotonic()
        self.assertEqual(n.studies()[study]["state"], "receiving")
        s = n.wait_for_study(study, state="complete", timeout=15)
        self.assertGreaterEqual(time.monotonic() - t0, 4.0)
        self.assertEqual(s["instances"], 3)
        self.assertEqual(n.stop(), 0)

    # --- shutdown ---------------------------------------------------------
    def test_sigterm_lets_a_running_association_finish_then_exits_0(self):
        n = self.node()
        n.start()
        good = os.path.join(PYDICOM_FILES, "CT_small.dcm")
        ds = pydicom.dcmread(good, stop_before_pixels=True)
        a = rawscu.Association(n.port)
        n.signal(signal.SIGTERM)
        # No new associations...
        harness.wait_until(lambda: harness.echoscu(n.port, ae_called=n.ae,
                                                   check=False).returncode != 0,
                           5, 0.1, "new associations refused")
        # ...but the running one is served to its end.
        self.assertEqual(a.store(rawscu.CT_STORAGE, ds.SOPInstanceUID,
                                 harness.dataset_bytes(good)), 0)
        self.assertTrue(a.release())
        self.assertEqual(n.wait(timeout=10), 0)
        self.assertIsNotNone(stored_path(n, ds.SOPInstanceUID))

    def test_sigterm_wait_for_an_idle_association_is_bounded(self):
        n = self.node(shutdown_grace_seconds=1)
        n.start()
        a = rawscu.Association(n.port)
        t0 = time.monotonic()
        n.signal(signal.SIGTERM)
        self.assertEqual(n.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 4)
        a.close()

    # --- command line -----------------------------------------------------
    def test_invalid_config_is_refused_with_positions(self):
        n = self.node()
        n.write_raw_config("node:\n  port: 70000\n  colour: blue\n")
        for cmd in ("check-config", "serve"):
            r = subprocess.run([self.binary, cmd, "-c", n.config_path], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, cmd)
            lines = r.stderr.splitlines()
            self.assertEqual(lines, [
                n.config_path + ":2:9: node.port: 70000 is out of range 0..65535",
                n.config_path + ":3:3: unknown key 'colour' in node",
                n.config_path + ": 2 problems found",
            ], r.stderr)

    def test_status_prints_a_table_and_json(self):
        n = self.node(stable_seconds=1)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 3, rows=16, cols=16)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        harness.storescu(n.port, files, ae_called=n.ae)
        s = n.wait_for_study(study, state="complete", timeout=10)
        self.assertEqual(set(s), {"id", "study_uid", "state", "instances", "series",
                                  "last_received", "completed", "held"})
        self.assertIsNone(s["held"])
        self.assertEqual((s["instances"], s["series"]), (3, 1))
        self.assertRegex(s["last_received"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        table = n.cli("status", "-c", n.config_path).stdout
        self.assertIn(study, table)
        self.assertIn("complete", table)
        self.assertEqual(n.stop(), 0)



class JobCrashTest(NodeTestCase):
    """A job that crashes the node is quarantined, not run at every start."""

    def node_running_a_slow_job(self):
        """A node running the slow model of the inference tests on a series."""
        # Imported here: that module imports this one.
        from test_inference import models, phantom, slow_builtin_model
        # 1x4x4 patches: a retried job must still be running at the next
        # status poll on a loaded machine.
        built, manifest = slow_builtin_model(self.workdir, self.binary, patch=(1, 4, 4))
        rules = [{"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"]}]
        n = self.node(sections={"models": models(file=built, manifest=manifest),
                                "rules": rules}, stable_seconds=1)
        n.start()
        files = make_ct_series(os.path.join(self.workdir, "in"), 60, rows=256, cols=256,
                               pixel_fn=phantom)
        harness.storescu(n.port, files, ae_called=n.ae)
        return n

    def in_inference(self, n):
        """The jobs running their model now (fails if one ended)."""
        jobs = n.status()["jobs"]
        self.assertEqual([j for j in jobs if j["state"] in ("done", "failed")], [],
                         "the job ended before the node could die in it")
        return [j for j in jobs if j["state"] == "running" and j["stage"] == "inference"]

    def test_a_job_that_crashes_the_node_is_quarantined_until_retried(self):
        # The crash is on purpose: no core file for it.
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_CORE, (soft, hard))
        n = self.node_running_a_slow_job()

        def in_inference():
            return self.in_inference(n)
        job = harness.wait_until(in_inference, 60, 0.05, "the job to run its model")[0]

        # A fatal signal while the model runs, as a crash in it would raise.
        n.signal(signal.SIGSEGV)
        self.assertEqual(n.wait(30), -signal.SIGSEGV)
        with open(os.path.join(n.data_dir, "job-crash")) as f:
            self.assertEqual(f.read(), "%d %d\n" % (job["id"], signal.SIGSEGV))

        # Started again, the node quarantines it with its reason and never
        # runs it by itself.
        n.start()
        reason = "the node crashed (SIGSEGV) during inference"
        for _ in range(3):
            jobs = n.status()["jobs"]
            self.assertEqual(len(jobs), 1)
            self.assertEqual(jobs[0]["state"], "quarantined", jobs)
            self.assertEqual(jobs[0]["error"], reason)
            self.assertIsNone(jobs[0]["stage"])
            self.assertEqual(jobs[0]["attempts"], 1)
            time.sleep(1)
        self.assertFalse(os.path.exists(os.path.join(n.data_dir, "job-crash")))
        table = n.cli("status", "-c", n.config_path, check=True).stdout
        self.assertIn("quarantined", table)
        self.assertIn(reason, table)

        # Retried by hand, it runs again; a clean stop during it gives it
        # back to the queue, not to the quarantine.
        r = n.cli("retry", "-c", n.config_path, "--job", str(job["id"]))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "job %d queued again" % job["id"])
        r = n.cli("retry", "-c", n.config_path, "--job", str(job["id"]))
        self.assertNotEqual(r.returncode, 0)
        harness.wait_until(in_inference, 60, 0.05, "the retried job to run its model")
        self.assertEqual(n.stop(), 0)
        jobs = n.status()["jobs"]
        self.assertEqual(jobs[0]["state"], "queued", jobs)
        self.assertIsNone(jobs[0]["error"])
        n.start()
        self.assertNotEqual(n.status()["jobs"][0]["state"], "quarantined")
        self.assertEqual(n.stop(), 0)


    def test_a_job_inside_which_the_node_is_killed_twice_is_quarantined(self):
        # A kill from outside (an operator, the OOM killer) may not be the
        # job's doing: it runs again once, and is quarantined the second time.
        n = self.node_running_a_slow_job()

        def in_inference():
            return self.in_inference(n)
        job = harness.wait_until(in_inference, 60, 0.05, "the job to run its model")[0]
        n.kill9()
        n.start()
        again = harness.wait_until(in_inference, 60, 0.05, "the job to run again")[0]
        self.assertEqual((again["id"], again["attempts"]), (job["id"], 2))
        n.kill9()
        n.start()
        jobs = n.status()["jobs"]
        self.assertEqual(jobs[0]["state"], "quarantined", jobs)
        self.assertEqual(jobs[0]["error"], "the node stopped during inference 2 times")
        time.sleep(2)
        self.assertEqual(n.status()["jobs"][0]["state"], "quarantined")
        self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
