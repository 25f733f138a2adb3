#!/usr/bin/python3
"""The attacks a hostile peer can make on the node, each played against one
running node (the real binary) that already holds a study: after each one
the node must still be the same process, answer a C-ECHO within 1 s, still
hold that study byte for byte, and its peak memory during the attack must
stay under the budget the config gives it.

    attacks.run_all(binary, workdir) -> [result, ...]

Each result is a dict: name, kind ("network" or "job"), served (the C-ECHO
after it succeeded within 1 s), echo_s, crashed (the node died or was
restarted), lost (instances of the held study missing or changed),
peak_rss_mib (the node's peak resident memory during the attack, VmHWM reset
before it through /proc/PID/clear_refs), budget_mib and detail.

The budget is the node's resident memory just before the attack plus what
the config allows the attack to spend: node.max_job_memory_mb for what runs
in a job (decoding, resampling), node.max_dataset_mb for what arrives on the
network (a data set is streamed to disk; inflation has that byte budget).

Run on its own it prints one line per attack:
    /usr/bin/python3 attacks.py build/ainode [WORKDIR]
test_faults.py folds the results into the fault suite's summary line.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import harness  # noqa: E402
import rawscu  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import fine_manifest, hostile_geometry_study, phantom  # noqa: E402
from test_network import make_deflate_bomb, proc_status_kib, reset_connection  # noqa: E402
from test_receiver import db_rows  # noqa: E402

import pydicom  # noqa: E402

MAX_JOB_MEMORY_MB = 256
MAX_DATASET_MB = 16


# --- the node's memory and health ------------------------------------------
def _reset_peak(pid):
    """Restarts VmHWM from the current RSS (Linux >= 4.0)."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


def _echo_seconds(node):
    t0 = time.monotonic()
    r = harness.echoscu(node.port, ae_called=node.ae, check=False, timeout=10)
    took = time.monotonic() - t0
    return took if r.returncode == 0 else None


def _held_instances(node):
    """{SOP Instance UID: stored path} from the node's index."""
    return dict(db_rows(node, "SELECT sop_instance_uid, path FROM instances"))


def _jobs_idle(node):
    jobs = node.status().get("jobs", [])
    return all(j["state"] not in ("queued", "running") for j in jobs)


# --- hostile files ----------------------------------------------------------
def _restamp(src, dst, study, series, n, z):
    """SRC as instance N of a new SERIES in STUDY at height Z (pixels kept)."""
    ds = pydicom.dcmread(src)
    uid = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.InstanceNumber = n
    ds.Modality = "CT"  # the rules run the model on CT
    if "ImagePositionPatient" in ds:
        pos = list(ds.ImagePositionPatient)
        ds.ImagePositionPatient = [pos[0], pos[1], str(z)]
    ds.save_as(dst)
    return dst


def _two_slice_series(fixtures, name, out):
    """Two slices made of the hostile fixture NAME: a series a job takes up."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    os.makedirs(out, exist_ok=True)
    return [_restamp(os.path.join(fixtures, name), os.path.join(out, "%d.dcm" % i),
                     study, series, i + 1, 1.5 * i) for i in range(2)]


# --- the attacks ---------------------------------------------------------------
def silent_connections(ctx):
    socks = [socket.create_connection(("127.0.0.1", ctx.node.port)) for _ in range(60)]
    try:
        time.sleep(0.5)
        took = _echo_seconds(ctx.node)
        return "C-ECHO while 60 were held: %s" % ("failed" if took is None else "%.2f s" % took)
    finally:
        for s in socks:
            s.close()


def connect_and_reset(ctx):
    rq, _ = rawscu.associate_rq(called=ctx.node.ae)
    sends = [b"", rq[:3], rq]
    for i in range(600):
        reset_connection(ctx.node.port, sends[i % len(sends)])
    return "600 connections reset"


def association_flood(ctx):
    # More associations from one caller than max_associations_per_caller.
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", ctx.node.port))
            rq, _ = rawscu.associate_rq(called=ctx.node.ae, calling="FLOOD")
            s.sendall(rq)
            socks.append(s)
        time.sleep(0.5)
        return "20 associations held by one caller"
    finally:
        for s in socks:
            s.close()


def forged_log_line(ctx):
    r = harness.echoscu(ctx.node.port, ae_called=ctx.node.ae, ae_calling="X\nFORGED",
                        check=False)
    forged = any(line.startswith("FORGED") for line in ctx.node.log().splitlines())
    if forged:
        raise AssertionError("a calling AE title forged a log line")
    return "echoscu exit %d, no forged line" % r.returncode


def oversized_data_set(ctx):
    big = make_ct_series(os.path.join(ctx.workdir, "big"), 1, rows=4096, cols=4096)
    r = harness.storescu(ctx.node.port, big, ae_called=ctx.node.ae, check=False, timeout=120)
    if harness.all_stores_succeeded(r.stdout):
        raise AssertionError("a 32 MiB data set was stored past max_dataset_mb %d"
                             % MAX_DATASET_MB)
    return "refused"


def deflate_bomb(ctx):
    bomb = os.path.join(ctx.workdir, "bomb.dcm")
    inflated = make_deflate_bomb(bomb, 512, pydicom.uid.generate_uid())
    r = harness.storescu(ctx.node.port, bomb, ae_called=ctx.node.ae, extra=["-xd"],
                         check=False, timeout=300)
    statuses = harness.storescu_statuses(r.stdout)
    if statuses != ["Refused: OutOfResources"]:
        raise AssertionError("deflate bomb answered %r" % statuses)
    return "%d KiB file of %d MiB inflated, refused" % (os.path.getsize(bomb) >> 10,
                                                      inflated >> 20)


def _job_attack(ctx, files):
    """Sends FILES as they are (dcmsend -dn: compressed stays compressed),
    waits until the jobs have ended; returns (instances stored, failed jobs)."""
    before = len(_held_instances(ctx.node))
    harness.dcmsend(ctx.node.port, files, ae_called=ctx.node.ae, extra=["-dn"], check=False,
                    timeout=120)
    time.sleep(1.5)  # node.stable_seconds 1: the study completes
    harness.wait_until(lambda: not ctx.node.running() or _jobs_idle(ctx.node), 120, 0.2,
                       "the jobs to end")
    failed = [j.get("error") or "" for j in ctx.node.status().get("jobs", [])
              if j["state"] == "failed"]
    return len(_held_instances(ctx.node)) - before, failed


def _decode_attack(fixture):
    def attack(ctx):
        files = _two_slice_series(ctx.fixtures, fixture, os.path.join(ctx.workdir, fixture))
        stored, failed = _job_attack(ctx, files)
        return "%d of 2 stored; failed jobs so far %d" % (stored, len(failed))
    attack.__name__ = fixture
    return attack


def hostile_geometry(ctx):
    stored, failed = _job_attack(ctx, hostile_geometry_study(ctx.workdir))
    return "%d of 6 stored; failed jobs so far %d" % (stored, len(failed))


def uid_under_another_study(ctx):
    src = ctx.held_files[0]
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.PatientID = "SOMEONE-ELSE"
    dst = os.path.join(ctx.workdir, "hijack.dcm")
    ds.save_as(dst)
    r = harness.storescu(ctx.node.port, dst, ae_called=ctx.node.ae, check=False)
    statuses = harness.storescu_statuses(r.stdout)
    if statuses == ["Success"]:
        raise AssertionError("a known SOP Instance UID was accepted under another study")
    return "answered %s" % ", ".join(statuses)


# name, kind, attack
ATTACKS = [
    ("60 silent connections", "network", silent_connections),
    ("600 connections reset at once", "network", connect_and_reset),
    ("20 associations from one caller", "network", association_flood),
    ("calling AE title with a newline", "network", forged_log_line),
    ("32 MiB data set over max_dataset_mb", "network", oversized_data_set),
    ("deflate bomb", "network", deflate_bomb),
    ("known SOP Instance UID under another study", "network", uid_under_another_study),
    ("JPEG 2000 codestream claiming 40000x40000", "job", _decode_attack("j2k_siz_huge.dcm")),
    ("JPEG frame header claiming 30000x30000", "job", _decode_attack("jpeg_sof_huge.dcm")),
    ("JPEG-LS frame header claiming 30000x30000", "job",
     _decode_attack("jpegls_sof_huge.dcm")),
    ("4 million 1x1 frames", "job", _decode_attack("frames_4m.dcm")),
    ("huge spacing, 1e308 positions, 100 mm pixels resampled to 0.25 mm", "job",
     hostile_geometry),
]


class _Context:
    pass


def run_all(binary, workdir):
    """Plays every attack on one node made in WORKDIR; returns the results.
    The node is stopped at the end whatever happens."""
    os.makedirs(workdir, exist_ok=True)
    ctx = _Context()
    ctx.workdir = workdir
    ctx.fixtures = os.path.join(workdir, "fixtures")
    os.makedirs(ctx.fixtures, exist_ok=True)
    subprocess.run([sys.executable, "-B", os.path.join(HERE, "..", "tools",
                                                       "make_hostile_fixtures.py"), ctx.fixtures],
                   check=True, stdout=subprocess.DEVNULL)
    # A model that resamples finely: geometry decides how much a job allocates.
    manifest = fine_manifest(workdir)
    sections = {
        "models": {"ct-bone-body": {"file": "builtin:ct-bone-body", "manifest": manifest,
                                    "threads": 1}},
        "rules": [{"name": "ct", "match": {"Modality": "CT"}, "run": ["ct-bone-body"]}],
    }
    # The default network timeout: storescu -xd inflates and deflates the
    # bomb again before its first byte, seconds on a loaded machine.
    node = harness.Node(binary, os.path.join(workdir, "node"), sections=sections,
                        stable_seconds=1,
                        max_job_memory_mb=MAX_JOB_MEMORY_MB, max_dataset_mb=MAX_DATASET_MB,
                        max_associations_per_caller=4)
    ctx.node = node
    results = []
    try:
        node.start()
        pid = node.pid
        # The study the attacks must not touch, processed once before them.
        ctx.held_files = make_ct_series(os.path.join(workdir, "held"), 6, rows=40, cols=48,
                                        pixel_fn=phantom)
        harness.storescu(node.port, ctx.held_files, ae_called=node.ae)
        time.sleep(1.5)
        harness.wait_until(lambda: _jobs_idle(node) and node.status().get("jobs"), 120, 0.2,
                           "the held study's job")
        held = {pydicom.dcmread(f).SOPInstanceUID: harness.dataset_bytes(f)
                for f in ctx.held_files}
        for name, kind, attack in ATTACKS:
            r = {"name": name, "kind": kind, "served": False, "echo_s": None,
                 "crashed": False, "lost": 0, "peak_rss_mib": None, "budget_mib": None,
                 "detail": ""}
            results.append(r)
            if not node.running() or node.pid != pid:
                r["crashed"] = True
                r["detail"] = "the node was not running before the attack"
                break
            _reset_peak(pid)
            rss = proc_status_kib(pid, "VmRSS") / 1024.0
            allowance = MAX_JOB_MEMORY_MB if kind == "job" else MAX_DATASET_MB
            r["budget_mib"] = round(rss + allowance, 1)
            try:
                r["detail"] = attack(ctx)
            except Exception as e:  # the attack's own check failed: reported
                r["detail"] = "%s: %s" % (type(e).__name__, e)
                r["error"] = True
            if not node.running() or node.pid != pid:
                r["crashed"] = True
                r["detail"] += "; the node died (exit %r)" % (node.proc.poll(),)
                break
            r["peak_rss_mib"] = round(proc_status_kib(pid, "VmHWM") / 1024.0, 1)
            r["echo_s"] = _echo_seconds(node)
            r["served"] = r["echo_s"] is not None and r["echo_s"] < 1.0
            now = _held_instances(node)
            r["lost"] = sum(1 for uid, data in held.items()
                            if uid not in now or not os.path.exists(now[uid])
                            or harness.dataset_bytes(now[uid]) != data)
    finally:
        node.stop()
    return results


def format_result(r):
    return "%-66s %s  echo %s  peak %s MiB / budget %s MiB  lost %d  %s" % (
        r["name"], "CRASHED" if r["crashed"] else ("served " if r["served"] else "NOT SERVED"),
        "-" if r["echo_s"] is None else "%.2f s" % r["echo_s"],
        r["peak_rss_mib"], r["budget_mib"], r["lost"], r["detail"])


def failures(results):
    """What is wrong in RESULTS, one text per problem (empty when all held)."""
    bad = []
    for r in results:
        if r["crashed"]:
            bad.append("%s: the node crashed" % r["name"])
        if not r["served"]:
            bad.append("%s: no C-ECHO within 1 s afterwards (%r)" % (r["name"], r["echo_s"]))
        if r["lost"]:
            bad.append("%s: %d held instance(s) lost or changed" % (r["name"], r["lost"]))
        if r["peak_rss_mib"] is not None and r["peak_rss_mib"] > r["budget_mib"]:
            bad.append("%s: peak RSS %.1f MiB over the budget %.1f MiB"
                       % (r["name"], r["peak_rss_mib"], r["budget_mib"]))
        if r.get("error"):
            bad.append("%s: %s" % (r["name"], r["detail"]))
    if len(results) < len(ATTACKS):
        bad.append("only %d of %d attacks were played" % (len(results), len(ATTACKS)))
    return bad


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else harness.default_binary()
    workdir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="ainode-attacks-")
    try:
        results = run_all(binary, workdir)
    finally:
        if len(sys.argv) <= 2:
            shutil.rmtree(workdir, ignore_errors=True)
    for r in results:
        print(format_result(r))
    bad = failures(results)
    for b in bad:
        print("FAILED: " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
