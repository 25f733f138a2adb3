#!/usr/bin/python3
"""Integration tests of the HTTP admin endpoint (node.http): the real node
serving /healthz, /readyz, /metrics (checked by Prometheus's own promtool),
the JSON API with its token rules, HTTPS, and the status page as headless
Chromium renders it during a real workload.
    AINODE_BINARY=build/ainode /usr/bin/python3 -m unittest test_http.HttpTest.test_x

The status page's screenshot and one /metrics scrape are kept in
AINODE_TEST_OUTPUT (default: test-output/ next to the binary), under http/.
"""

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_inference import BUILTIN_MANIFEST, phantom  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402
from tlscerts import make_pki  # noqa: E402

TOKEN = "s3cret-token-for-the-admin-endpoint"
MODEL = "ct-bone-body"
RULES = [{"name": "ct", "match": {"Modality": "CT"}, "run": [MODEL], "send_results_to": ["pacs"]}]
SLICES = 4


def output_dir():
    """Where a test run keeps what it shows (a screenshot, a scrape)."""
    d = os.environ.get("AINODE_TEST_OUTPUT") or os.path.join(
        os.path.dirname(os.path.abspath(harness.default_binary())), "test-output")
    d = os.path.join(d, "http")
    os.makedirs(d, exist_ok=True)
    return d


def request(port, path, method="GET", token=None, tls_ca=None, body=None):
    """(status, headers dict with lower-case names, body text) of one request."""
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        conn = http.client.HTTPSConnection(harness.LOOPBACK, port, timeout=20, context=ctx)
    else:
        conn = http.client.HTTPConnection(harness.LOOPBACK, port, timeout=20)
    headers = {"Authorization": "Bearer " + token} if token else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def get_json(port, path, **kw):
    status, _, text = request(port, path, **kw)
    return status, json.loads(text)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text):
    """{(name, ((label, value), ...)): float} of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    if key not in s:
        raise AssertionError("no sample %s%s" % (name, labels))
    return s[key]


def promtool_problems(text):
    """What `promtool check metrics` says of TEXT (empty: nothing), and its exit code."""
    r = subprocess.run([harness.require_tool("promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    return (r.stdout + r.stderr).strip(), r.returncode


def chromium(*args):
    """Runs headless Chromium (Debian's chromium) with ARGS; its stdout."""
    exe = harness.require_tool("chromium")
    home = os.environ.get("TMPDIR", "/tmp")
    r = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                        "--virtual-time-budget=4000", *args],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=home))
    if r.returncode != 0:
        raise AssertionError("chromium exited with %d:\n%s" % (r.returncode, r.stderr[-3000:]))
    return r.stdout


def rows(dom, table):
    """The <tr> elements of TABLE's body in DOM, as attribute dicts with their text."""
    m = re.search(r'<table id="%s">.*?<tbody>(.*?)</tbody>' % table, dom, re.S)
    if not m:
        raise AssertionError("no table %s in the page" % table)
    out = []
    for attrs, inner in re.findall(r"<tr([^>]*)>(.*?)</tr>", m.group(1), re.S):
        row = dict(re.findall(r'([a-z-]+)="([^"]*)"', attrs))
        row["cells"] = [re.sub(r"<[^>]+>", "", c).strip()
                        for c in re.findall(r"<td[^>]*>(.*?)</td>", inner, re.S)]
        out.append(row)
    return out


class HttpTest(NodeTestCase):
    def token_file(self, mode=0o600, text=TOKEN + "\n"):
        path = os.path.join(self.workdir, "token")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def http_node(self, sections=None, http_extra=None, **overrides):
        port = harness.free_port()
        h = {"bind": "127.0.0.1", "port": port}
        h.update(http_extra or {})
        n = self.node(sections=sections, http=h, **overrides)
        n.http_port = port
        return n

    def workload_node(self, pacs_port):
        sections = {
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1",
                                      "port": pacs_port, "retry_initial_seconds": 1}},
            "models": {MODEL: {"file": "builtin:" + MODEL, "threads": 1}},
            "rules": RULES,
        }
        return self.http_node(sections=sections, http_extra={"token_file": self.token_file()},
                              stable_seconds=1, network_timeout_seconds=5)

    def send_studies(self, n, count):
        """COUNT studies of SLICES slices each, one storescu run each; their files."""
        files = []
        for i in range(count):
            f = make_ct_series(os.path.join(self.workdir, "in%d" % i), SLICES, rows=24, cols=24,
                               pixel_fn=phantom, patient_id="HTTP%d" % i)
            harness.storescu(n.port, f, ae_called=n.ae)
            files += f
        return files

    def wait_sent(self, n, count):
        def check():
            items = n.status()["outbox"]
            return len(items) == count and all(i["state"] == "sent" for i in items)
        harness.wait_until(check, 120, 0.2, "%d outbox items sent" % count)

    # -- health ----------------------------------------------------------------

    def test_readyz_is_503_with_the_reason_while_a_model_cannot_load(self):
        bad = os.path.join(self.workdir, "bad.pt")
        with open(bad, "w") as f:
            f.write("this is not a TorchScript archive\n")
        manifest = os.path.join(self.workdir, "bad.yaml")
        shutil.copy(BUILTIN_MANIFEST, manifest)
        n = self.http_node(sections={
            "models": {"good": {"file": "builtin:" + MODEL, "threads": 1},
                       "bad": {"file": bad, "manifest": manifest, "threads": 1}}})
        n.start()
        status, doc = get_json(n.http_port, "/healthz")
        self.assertEqual((status, doc), (200, {"status": "alive"}))

        def failed():
            st, d = get_json(n.http_port, "/readyz")
            # Once the good model loaded, the bad one is the only reason.
            return (st, d) if len(d["reasons"]) == 1 and \
                d["reasons"][0].startswith("model bad cannot be loaded: ") else None
        status, doc = harness.wait_until(failed, 30, 0.2, "readyz naming the bad model alone")
        self.assertEqual((status, doc["ready"]), (503, False))
        self.assertEqual(n.stop(), 0)

    # -- metrics, API and the page after a known workload ------------------------

    def test_metrics_parse_and_count_a_three_study_workload_and_the_page_shows_it(self):
        with harness.StoreSCP(os.path.join(self.workdir, "pacs")) as pacs:
            n = self.workload_node(pacs.port)
            n.start()
            # One association refused: a called AE title that is not ours.
            r = harness.echoscu(n.port, ae_called="NOTOURS", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.send_studies(n, 3)
            self.wait_sent(n, 6)
            status, doc = get_json(n.http_port, "/readyz")
            self.assertEqual((status, doc), (200, {"ready": True, "reasons": []}))

            status, headers, text = request(n.http_port, "/metrics")
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
            with open(os.path.join(output_dir(), "metrics.txt"), "w") as f:
                f.write(text)
            problems, rc = promtool_problems(text)
            self.assertEqual((rc, problems), (0, ""))

            s = samples(text)
            stored = n.stored_files()
            self.assertEqual(len(stored), 3 * SLICES)
            self.assertEqual(value(s, "ainode_instances_received_total"), 3 * SLICES)
            self.assertEqual(value(s, "ainode_received_bytes_total"),
                             sum(os.path.getsize(p) for p in stored))
            self.assertEqual(value(s, "ainode_instances_refused_total"), 0)
            audit = json.loads(n.cli("audit", "-c", n.config_path, "--json", check=True).stdout)
            accepted = [a for a in audit["associations"]
                        if not a["outcome"].startswith("rejected")]
            self.assertGreaterEqual(len(accepted), 4)  # the start's C-ECHO and 3 storescu
            self.assertEqual(value(s, "ainode_associations_accepted_total"), len(accepted))
            self.assertEqual(value(s, "ainode_associations_rejected_total", reason="called_ae"),
                             1)
            self.assertEqual(value(s, "ainode_associations_rejected_total", reason="calling_ae"),
                             0)
            self.assertEqual(value(s, "ainode_studies", state="complete"), 3)
            self.assertEqual(value(s, "ainode_studies", state="receiving"), 0)
            self.assertEqual(value(s, "ainode_jobs", model=MODEL, state="done"), 3)
            self.assertEqual(value(s, "ainode_jobs", model=MODEL, state="queued"), 0)
            self.assertEqual(value(s, "ainode_jobs_finished_total", model=MODEL, outcome="done"),
                             3)
            self.assertEqual(value(s, "ainode_job_run_seconds_count", model=MODEL), 3)
            self.assertEqual(value(s, "ainode_job_run_seconds_bucket", model=MODEL, le="+Inf"),
                             3)
            self.assertEqual(value(s, "ainode_job_queue_wait_seconds_count", model=MODEL), 3)
            self.assertGreater(value(s, "ainode_job_run_seconds_sum", model=MODEL), 0)
            for kind in ("seg", "sr"):
                self.assertEqual(value(s, "ainode_results_sent_total", destination="pacs",
                                       kind=kind), 3)
            self.assertEqual(value(s, "ainode_outbox_items", destination="pacs",
                                   state="pending"), 0)
            self.assertEqual(value(s, "ainode_outbox_items", destination="pacs",
                                   state="sent"), 6)
            self.assertEqual(value(s, "ainode_outbox_oldest_pending_age_seconds",
                                   destination="pacs"), 0)
            self.assertGreater(value(s, "ainode_results_last_sent_timestamp_seconds",
                                     destination="pacs"), 0)
            self.assertEqual(value(s, "ainode_model_loaded", model=MODEL), 1)
            self.assertGreater(value(s, "ainode_data_disk_free_bytes"), 0)
            version = n.cli("version", check=True).stdout.split()[-1]
            self.assertEqual(value(s, "ainode_build_info", version=version), 1)

            self.check_page(n)
            self.assertEqual(n.stop(), 0)

    def check_page(self, n):
        """The page, rendered by headless Chromium: the DOM shows the workload,
        and a phone-sized screenshot is kept."""
        url = "http://127.0.0.1:%d/" % n.http_port
        dom = chromium("--dump-dom", url)
        self.assertIn('class="badge ok">ready<', dom)
        studies = rows(dom, "studies")
        self.assertEqual([r["data-state"] for r in studies], ["complete"] * 3, studies)
        self.assertEqual({r["cells"][3] for r in studies}, {str(SLICES)})
        jobs = rows(dom, "jobs")
        self.assertEqual([(r["data-state"], r["cells"][1]) for r in jobs],
                         [("done", MODEL)] * 3, jobs)
        self.assertTrue(all(re.match(r"^\d+\.\d\d$", r["cells"][3]) for r in jobs), jobs)
        dest = rows(dom, "destinations")
        self.assertEqual(len(dest), 1, dest)
        self.assertEqual((dest[0]["data-destination"], dest[0]["cells"][1:4]),
                         ("pacs", ["0", "0", "6"]))
        self.assertRegex(dest[0]["cells"][4], r"^\d+ s ago$")
        self.assertEqual(dest[0]["cells"][5], "never")
        models = rows(dom, "models")
        self.assertEqual([(r["data-model"], r["cells"][1], r["data-state"]) for r in models],
                         [(MODEL, "cpu", "loaded")])
        queue = rows(dom, "queue")
        self.assertEqual(queue[0]["cells"][:4], [MODEL, "0", "0", "3"])
        self.assertRegex(dom, r'<p class="muted" id="disk-text">[0-9.]+ [KMGT]iB free of ')
        shot = os.path.join(output_dir(), "status-page.png")
        if os.path.exists(shot):
            os.unlink(shot)
        chromium("--screenshot=" + shot, "--window-size=390,844", url)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        print("\nstatus page screenshot: %s" % shot, file=sys.stderr)

    def test_the_api_lists_studies_and_jobs_and_retries_only_with_the_token(self):
        # A destination nobody listens on, one attempt: the results are
        # dead-lettered at once.
        dead_port = harness.free_port()
        n = self.workload_node(dead_port)
        n.config["destinations"]["pacs"]["max_attempts"] = 1
        n.write_raw_config(n.config_text())
        n.start()
        files = self.send_studies(n, 1)
        study_uid = n.status()["studies"][0]["study_uid"]

        def dead():
            items = n.status()["outbox"]
            return items if len(items) == 2 and all(i["state"] == "failed" for i in items) \
                else None
        items = harness.wait_until(dead, 60, 0.2, "two dead-lettered items")

        # The document of `ainode status --json` (the harness asks for the
        # oldest first).
        status, doc = get_json(n.http_port, "/api/v1/status?order=oldest")
        self.assertEqual(status, 200)
        self.assertEqual(doc, n.status())
        status, doc = get_json(n.http_port, "/api/v1/status")
        self.assertEqual([i["id"] for i in doc["outbox"]], sorted(i["id"] for i in items)[::-1])
        status, doc = get_json(n.http_port, "/api/v1/studies/" + study_uid)
        self.assertEqual(status, 200)
        self.assertEqual((doc["study"]["study_uid"], doc["study"]["instances"]),
                         (study_uid, len(files)))
        self.assertEqual([j["state"] for j in doc["jobs"]], ["done"])
        self.assertEqual(sorted(i["kind"] for i in doc["outbox"]), ["seg", "sr"])
        status, doc = get_json(n.http_port, "/api/v1/studies/1.2.3.999")
        self.assertEqual((status, doc), (404, {"error": "no such study"}))
        status, doc = get_json(n.http_port, "/api/v1/studies/not-a-uid")
        self.assertEqual(status, 400)
        status, doc = get_json(n.http_port, "/api/v1/jobs?state=done")
        self.assertEqual((status, [j["model"] for j in doc["jobs"]]), (200, [MODEL]))
        status, doc = get_json(n.http_port, "/api/v1/jobs?state=queued")
        self.assertEqual((status, doc["jobs"]), (200, []))
        status, doc = get_json(n.http_port, "/api/v1/jobs?state=bogus")
        self.assertEqual(status, 400, doc)
        self.assertIn("error", doc)

        item = items[0]["id"]
        path = "/api/v1/outbox/%d/retry" % item
        # Without the token, with another: refused before anything changes.
        self.assertEqual(request(n.http_port, path, "POST")[0], 401)
        self.assertEqual(request(n.http_port, path, "POST", token=TOKEN + "x")[0], 403)
        self.assertEqual(request(n.http_port, path, "POST", token=TOKEN[:-1])[0], 403)
        self.assertEqual({i["state"] for i in n.status()["outbox"]}, {"failed"})
        status, doc = get_json(n.http_port, path, method="POST", token=TOKEN)
        self.assertEqual((status, doc), (200, {"outbox_item": item, "queued": 1}))
        # It was sent again (and failed again, after its one attempt).
        retried = [i for i in n.status()["outbox"] if i["id"] == item][0]
        self.assertIn(retried["state"], ("pending", "failed"))
        harness.wait_until(lambda: [i for i in n.status()["outbox"]
                                    if i["id"] == item and i["state"] == "failed"],
                           30, 0.2, "the retried item failing again")
        # A job that is not quarantined is not queued again.
        job = n.status()["jobs"][0]["id"]
        status, doc = get_json(n.http_port, "/api/v1/jobs/%d/retry" % job, method="POST",
                               token=TOKEN)
        self.assertEqual((status, doc), (409, {"error": "job %d is not a quarantined one" % job}))
        self.assertEqual(request(n.http_port, "/api/v1/nothing")[0], 404)
        self.assertEqual(request(n.http_port, "/api/v1/jobs/1/retry", "POST", token=TOKEN,
                                 body="x" * 100)[0], 413)
        self.assertIn("refused a POST request from 127.0.0.1: a wrong bearer token", n.log())
        self.assertNotIn(TOKEN, n.log())
        self.assertEqual(n.stop(), 0)

    def test_without_a_token_file_no_post_is_taken(self):
        n = self.http_node()
        n.start()
        status, doc = get_json(n.http_port, "/api/v1/outbox/1/retry", method="POST",
                               token=TOKEN)
        self.assertEqual((status, doc), (403, {"error": "POST needs node.http.token_file"}))
        self.assertEqual(n.stop(), 0)

    # -- configuration -----------------------------------------------------------

    def check_config(self, n):
        r = n.cli("check-config", "-c", n.config_path)
        return r.returncode, r.stdout + r.stderr

    def test_check_config_refuses_an_exposed_bind_without_a_token_and_a_readable_token(self):
        n = self.http_node(http_extra={"bind": "0.0.0.0"})
        rc, out = self.check_config(n)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"ainode\.yaml:\d+:\d+: node\.http\.bind: 0\.0\.0\.0 is reachable "
                              r"from other hosts: set node\.http\.token_file")
        n = self.http_node(name="n2", http_extra={"bind": "0.0.0.0",
                                                  "token_file": self.token_file(mode=0o644)})
        rc, out = self.check_config(n)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"node\.http\.token_file: .*token is readable by every user "
                              r"\(mode 0644\)")
        n = self.http_node(name="n3", http_extra={"token_file": self.token_file(text="short\n")})
        rc, out = self.check_config(n)
        self.assertEqual(rc, 1, out)
        self.assertIn("no token of at least 16 characters", out)
        self.assertNotIn("short", out.replace("no token", ""))
        n = self.http_node(name="n4")
        n.config["node"]["http"]["port"] = n.port
        n.write_raw_config(n.config_text())
        rc, out = self.check_config(n)
        self.assertEqual(rc, 1, out)
        self.assertIn("node.http.port: %d is node.port" % n.port, out)
        n = self.http_node(name="n5", http_extra={"bind": "0.0.0.0",
                                                  "token_file": self.token_file()})
        rc, out = self.check_config(n)
        self.assertEqual((rc, out.strip().endswith("OK")), (0, True), out)

    def test_https_serves_with_the_configured_certificate(self):
        harness.require_tool("openssl")
        pki = make_pki(os.path.join(self.workdir, "pki"))
        key = os.path.join(self.workdir, "http.key")
        shutil.copy(pki.server_key, key)
        os.chmod(key, 0o600)
        n = self.http_node(http_extra={"tls": {"certificate": pki.server_crt,
                                               "private_key": key}})
        n.start()
        status, _, body = request(n.http_port, "/healthz", tls_ca=pki.ca)
        self.assertEqual((status, json.loads(body)), (200, {"status": "alive"}))
        status, _, text = request(n.http_port, "/metrics", tls_ca=pki.ca)
        self.assertEqual(status, 200)
        self.assertIn("ainode_build_info", text)
        # Plain HTTP on the HTTPS port gets no answer.
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            request(n.http_port, "/healthz")
        self.assertIn("HTTP endpoint on https://127.0.0.1:%d" % n.http_port, n.log())
        self.assertEqual(n.stop(), 0)


if __name__ == "__main__":
    unittest.main()
