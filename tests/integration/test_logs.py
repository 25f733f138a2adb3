#!/usr/bin/python3
"""The node's log: one line per event, as key=value fields or JSON lines.

Every line the node writes during a real study (storescu in, completion)
must parse as logfmt with the keys the node documents, name its event and
carry the ids it is about, never the patient's name or a UID at the default
level. With node.log_format json every line is a JSON object. Under systemd
(JOURNAL_STREAM naming stderr) each line starts with its syslog priority.
A reload changes log_level and log_format of the running node.
"""

import json
import os
import re
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from gen_series import make_ct_series  # noqa: E402
from test_receiver import NodeTestCase  # noqa: E402

PATIENT = "Logs^Patient"
KEYS = ("ts", "level", "event", "study", "job", "item", "model", "dest", "peer", "addr", "msg")
# A logfmt field: key=value, the value bare (no space, quote or '=') or quoted.
FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "=]+)(?: |$)')


def logfmt(line):
    """The fields of one logfmt line, in order; AssertionError if it is not one."""
    fields, pos = [], 0
    while pos < len(line):
        m = FIELD.match(line, pos)
        if not m:
            raise AssertionError("not key=value at column %d: %r" % (pos, line))
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        fields.append((m.group(1), value))
        pos = m.end()
    return fields


def node_lines(n):
    """The node's own lines (the harness writes a '=== ... ===' header per start)."""
    return [ln for ln in n.log().splitlines() if ln and not ln.startswith("=== ")]


class LogTest(NodeTestCase):
    def send_study(self, n, name="in", count=3):
        files = make_ct_series(os.path.join(self.workdir, name), count, rows=16, cols=16,
                               patient_name=PATIENT)
        harness.storescu(n.port, files, ae_called=n.ae, ae_calling="MODALITY1")
        return files

    def test_every_line_is_key_value_fields_naming_its_event_and_ids(self):
        n = self.node()
        n.start()
        self.send_study(n)
        harness.wait_until(lambda: "event=study.complete" in n.log(), 20, 0.1,
                           "the study complete")
        self.assertEqual(n.stop(), 0)
        events = {}
        for line in node_lines(n):
            fields = logfmt(line)
            keys = [k for k, _ in fields]
            # ts first, then level, the ids in their documented order, msg last.
            self.assertEqual(keys[:2], ["ts", "level"], line)
            self.assertEqual(keys[-1], "msg", line)
            self.assertEqual(keys, sorted(keys, key=KEYS.index), line)
            self.assertEqual(len(keys), len(set(keys)), line)
            d = dict(fields)
            self.assertRegex(d["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(d["level"], ("error", "warn", "info"), line)
            if "event" in d:
                self.assertRegex(d["event"], r"^[a-z_]+\.[a-z_]+$", line)
                events.setdefault(d["event"], []).append(d)
            # Nothing that identifies the patient or the study at info.
            self.assertNotIn("Logs", line)
            self.assertNotRegex(line, r"\d+\.\d+\.\d+\.\d+\.\d+", line)
        accepted = events["association.accepted"]
        self.assertEqual([(a["peer"], a["addr"]) for a in accepted],
                         [("ECHOSCU", "127.0.0.1"), ("MODALITY1", "127.0.0.1")])
        ended = [e for e in events["association.ended"] if e["peer"] == "MODALITY1"]
        self.assertEqual(len(ended), 1)
        self.assertIn("after 3 C-STORE", ended[0]["msg"])
        complete = events["study.complete"]
        self.assertEqual(len(complete), 1, complete)
        self.assertEqual(complete[0]["study"], "1")
        self.assertEqual(complete[0]["level"], "info")
        self.assertIn("node.listening", events)
        self.assertIn("node.stopped", events)

    def test_json_lines_and_a_reload_that_changes_level_and_format(self):
        n = self.node(log_format="json")
        n.start()
        self.send_study(n, "a", 2)
        harness.wait_until(lambda: '"event":"study.complete"' in n.log(), 20, 0.1,
                           "the first study complete")
        before = node_lines(n)
        for line in before:
            o = json.loads(line)
            self.assertIsInstance(o, dict, line)
            self.assertEqual(list(o)[:2], ["ts", "level"], line)
            self.assertEqual(list(o)[-1], "msg", line)
            self.assertLessEqual(set(o), set(KEYS), line)
            self.assertNotEqual(o["level"], "debug", line)
        stored = [json.loads(ln) for ln in before]
        self.assertIn({"peer": "MODALITY1", "addr": "127.0.0.1"},
                      [{k: o[k] for k in ("peer", "addr")} for o in stored
                       if o.get("event") == "association.accepted"])
        self.assertIn(1, [o.get("study") for o in stored if o.get("event") == "study.complete"])
        # At debug, each stored instance has a line (its UID: debug only).
        n.config["node"]["log_level"] = "debug"
        n.write_raw_config(n.config_text())
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: '"event":"config.reloaded"' in n.log(), 10, 0.1,
                           "the reload")
        self.send_study(n, "b", 2)
        harness.wait_until(lambda: n.log().count('"event":"instance.stored"') == 2, 10, 0.1,
                           "two instance.stored lines at debug")
        for line in node_lines(n)[len(before):]:
            json.loads(line)
        # Back to text at info: no more debug lines, key=value again.
        n.config["node"]["log_level"] = "info"
        n.config["node"]["log_format"] = "text"
        n.write_raw_config(n.config_text())
        n.signal(signal.SIGHUP)
        harness.wait_until(lambda: "event=config.reloaded" in n.log(), 10, 0.1,
                           "the second reload")
        mark = len(node_lines(n))
        self.send_study(n, "c", 2)
        harness.wait_until(lambda: n.log().count("event=association.ended") == 1, 10, 0.1,
                           "the third association in text")
        self.assertEqual(n.stop(), 0)
        after = node_lines(n)[mark:]
        self.assertTrue(after)
        for line in after:
            d = dict(logfmt(line))
            self.assertNotEqual(d["level"], "debug", line)
        self.assertEqual(n.log().count('"event":"instance.stored"'), 2)
        self.assertNotIn("event=instance.stored", n.log())

    def test_lines_to_the_journal_start_with_their_priority(self):
        n = self.node()
        # systemd names the stream it gives as stderr in JOURNAL_STREAM
        # (device:inode); the harness's log file plays that stream here.
        open(n.log_path, "ab").close()
        st = os.stat(n.log_path)
        n.env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        n.start()
        # A refused association: a warning.
        r = harness.echoscu(n.port, ae_called="NOTOURS", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(n.stop(), 0)
        lines = node_lines(n)
        self.assertTrue(lines)
        priorities = set()
        for line in lines:
            m = re.match(r"^<([3467])>(.*)$", line)
            self.assertIsNotNone(m, line)
            d = dict(logfmt(m.group(2)))
            self.assertNotIn("ts", d, line)  # the journal stamps lines itself
            self.assertEqual({"error": "3", "warn": "4", "info": "6"}[d["level"]], m.group(1))
            priorities.add(m.group(1))
        self.assertEqual(priorities, {"4", "6"})
        self.assertIn("<4>level=warn event=association.rejected peer=ECHOSCU addr=127.0.0.1 ",
                      n.log())


if __name__ == "__main__":
    unittest.main()
