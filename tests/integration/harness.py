#!/usr/bin/python3
"""Helpers for ainode integration tests: the node process, DCMTK peers, files.

Import from a test next to this file:

    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness                       # also makes tests/tools importable
    from gen_series import make_ct_series

    with harness.Node(harness.default_binary(), workdir) as node:
        node.start()
        files = make_ct_series(os.path.join(workdir, "in"), 10, rows=64, cols=64)
        harness.storescu(node.port, files, ae_called=node.ae)
        assert node.stop() == 0

Everything listens on and connects to 127.0.0.1 only. Every process started
here is stopped by its PID (StoreSCP: by the process group it leads, so that
--fork children go too); an atexit hook stops any left running.

Self-test (needs DCMTK and pydicom, not ainode):
    /usr/bin/python3 tests/integration/harness.py --selftest
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS_DIR = os.path.join(REPO_ROOT, "tests", "tools")
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0

__all__ = [
    "REPO_ROOT", "TOOLS_DIR", "LOOPBACK",
    "HarnessError", "NodeError", "ToolError", "MissingToolError",
    "require_tool", "default_binary", "free_port", "write_config", "dcmtk_env", "wait_until",
    "Node", "StoreSCP",
    "storescu", "dcmsend", "echoscu",
    "storescu_statuses", "storescu_file_statuses", "all_stores_succeeded",
    "dataset_bytes", "list_files",
]


class HarnessError(Exception):
    pass


class NodeError(HarnessError):
    pass


class MissingToolError(HarnessError):
    """A program a test needs is not installed: the test fails, naming it."""


# The Debian package of each outside program the tests run (the rest are DCMTK's).
TOOL_PACKAGES = {"dciodvfy": "dicom3tools", "cpack": "cmake", "dpkg-deb": "dpkg",
                 "dpkg-shlibdeps": "dpkg-dev", "systemd-analyze": "systemd",
                 "promtool": "prometheus", "chromium": "chromium", "openssl": "openssl",
                 "man": "man-db", "groff": "groff-base", "setpriv": "util-linux"}


def require_tool(name):
    """The path of program NAME on PATH; MissingToolError naming it when absent.
    A missing tool fails the test that needs it: it never skips or passes."""
    path = shutil.which(name)
    if not path:
        raise MissingToolError(
            "required program '%s' is not installed or not on PATH (Debian package %s; "
            "deploy/setup-debian.sh installs it)" % (name, TOOL_PACKAGES.get(name, "dcmtk")))
    return path


class ToolError(subprocess.CalledProcessError):
    """A DCMTK tool (or the node CLI) exited non-zero; str() shows its output."""

    def __str__(self):
        out = self.output or ""
        if isinstance(out, bytes):
            out = out.decode("utf-8", "replace")
        return "%s\n--- output (tail) ---\n%s" % (
            super().__str__(), _tail(out, 4000))


def _tail(text, n=4000):
    return text if len(text) <= n else "..." + text[-n:]


def default_binary():
    """$AINODE_BINARY, else <repo>/build/ainode."""
    return os.environ.get("AINODE_BINARY") or os.path.join(REPO_ROOT, "build", "ainode")


def free_port():
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def write_config(path, text):
    """Writes raw YAML text to path (directories created); returns path."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def dcmtk_env(extra=None):
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


def wait_until(predicate, timeout=30.0, interval=0.1, what="condition"):
    """Calls predicate() until it returns something truthy; returns that value.

    Raises TimeoutError (with the last exception, if any) after timeout s;
    a missing program is raised at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except MissingToolError:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1f s waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise TimeoutError(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------
# Processes started here, stopped at exit if a test forgot (or crashed).

_live = {}  # pid -> (Popen, group: bool)


def _register(proc, group):
    _live[proc.pid] = (proc, group)


def _unregister(proc):
    _live.pop(proc.pid, None)


def _signal(proc, sig, group):
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


@atexit.register
def _stop_leftovers():
    for pid, (proc, group) in list(_live.items()):
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM, group)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL, group)
                proc.wait()
        elif group:
            # leader gone; fork children may still be in the group
            _signal(proc, signal.SIGKILL, group)
        _live.pop(pid, None)


# --------------------------------------------------------------------------
# Minimal YAML writer (enough for the ainode config).

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./\-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED:
        return s
    return json.dumps(s)


def _yaml_lines(obj, indent):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if v is None:
                continue
            if isinstance(v, dict):
                lines.append("%s%s:" % (pad, k))
                lines.extend(_yaml_lines(v, indent + 2))
            elif isinstance(v, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in v):
                lines.append("%s%s:" % (pad, k))
                lines.extend(_yaml_lines(list(v), indent + 2))
            elif isinstance(v, (list, tuple)):
                lines.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(x) for x in v)))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = _yaml_lines(item, indent + 2)
                if sub:
                    sub[0] = pad + "- " + sub[0][indent + 2:]
                    lines.extend(sub)
                else:
                    lines.append(pad + "- {}")
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return lines


def to_yaml(obj):
    return "\n".join(_yaml_lines(obj, 0)) + "\n"


# --------------------------------------------------------------------------
# The node under test.

class Node:
    """One ainode process: `BINARY serve -c WORKDIR/ainode.yaml`.

    Node(binary, workdir, sections=None, create_data_dir=True, env=None,
         **node_overrides)

    node_overrides replace keys of the `node:` section (an override of None
    drops the key so that the node's default applies). Defaults: ae_title
    AINODE, a free port, bind 127.0.0.1, data_dir WORKDIR/data, stable_seconds
    2, max_associations 32, allowed_callers [], log_level info. `sections`
    adds other top-level keys, e.g. {"destinations": [{...}]}.

    The config is written by the constructor; call write_raw_config(text) to
    replace it with arbitrary YAML. Use as a context manager to make sure the
    process is stopped; __enter__ does not start it (start() returns self, so
    `with Node(...).start() as n:` works too, but then a failing start is not
    inside the with block - start() cleans up after itself anyway).
    """

    def __init__(self, binary, workdir, sections=None, create_data_dir=True,
                 env=None, **node_overrides):
        self.binary = os.path.abspath(binary)
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        node = {
            "ae_title": "AINODE",
            "port": None,
            "bind": LOOPBACK,
            "data_dir": os.path.join(self.workdir, "data"),
            "stable_seconds": 2,
            "max_associations": 32,
            "allowed_callers": [],
            "log_level": "info",
        }
        node.update(node_overrides)
        if "port" not in node_overrides:
            node["port"] = free_port()
        self.config = {"node": node}
        if sections:
            self.config.update(sections)
        self.config_path = os.path.join(self.workdir, "ainode.yaml")
        self.log_path = os.path.join(self.workdir, "node.log")
        self.env = env
        self.proc = None
        self.returncode = None
        if create_data_dir and node.get("data_dir"):
            os.makedirs(node["data_dir"], exist_ok=True)
        write_config(self.config_path, self.config_text())

    # -- config -------------------------------------------------------------
    def config_text(self):
        return to_yaml(self.config)

    def write_raw_config(self, text):
        return write_config(self.config_path, text)

    @property
    def port(self):
        return self.config["node"].get("port")

    @property
    def ae(self):
        return self.config["node"].get("ae_title") or "AINODE"

    @property
    def data_dir(self):
        return self.config["node"].get("data_dir")

    @property
    def db_path(self):
        return os.path.join(self.data_dir, "ainode.db")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # -- process ------------------------------------------------------------
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _echo_aet(self):
        callers = self.config["node"].get("allowed_callers") or []
        return callers[0] if callers else "ECHOSCU"

    def start(self, wait=True, timeout=START_TIMEOUT):
        """Launches serve; with wait, returns once a C-ECHO succeeds.

        Raises NodeError (with the log tail) if the process exits first or
        does not answer within timeout seconds (it is killed then)."""
        if self.running():
            raise NodeError("node already running (pid %d)" % self.proc.pid)
        if wait:
            require_tool("echoscu")  # before a node is started that nothing could reach
        log = open(self.log_path, "ab")
        try:
            log.write(("=== %s serve -c %s ===\n" % (self.binary, self.config_path)).encode())
            log.flush()
            self.proc = subprocess.Popen(
                [self.binary, "serve", "-c", self.config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workdir, env=self.env)
        finally:
            log.close()
        self.returncode = None
        _register(self.proc, group=False)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                _unregister(self.proc)
                raise NodeError("ainode exited with %d during start-up\n--- %s (tail) ---\n%s"
                                % (rc, self.log_path, self.log_tail()))
            r = echoscu(self.port, ae_called=self.ae, ae_calling=self._echo_aet(),
                        check=False, timeout=10, connect_timeout=2)
            if r.returncode == 0:
                return
            if time.monotonic() >= deadline:
                self.kill9()
                raise NodeError("ainode did not answer C-ECHO on port %s within %.0f s "
                                "(killed)\n--- %s (tail) ---\n%s"
                                % (self.port, timeout, self.log_path, self.log_tail()))
            time.sleep(0.1)

    def stop(self, timeout=30):
        """SIGTERM, then waits; returns the exit code (negative: signal).

        If still alive after timeout s: SIGKILL and raise NodeError."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _signal(self.proc, signal.SIGTERM, False)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(self.proc, signal.SIGKILL, False)
                self.proc.wait()
                self.returncode = self.proc.returncode
                _unregister(self.proc)
                raise NodeError("ainode (pid %d) ignored SIGTERM for %s s; killed\n"
                                "--- log (tail) ---\n%s" % (self.proc.pid, timeout, self.log_tail()))
        self.returncode = self.proc.returncode
        _unregister(self.proc)
        return self.returncode

    def signal(self, sig):
        """Sends sig to the node process (e.g. signal.SIGINT, SIGHUP)."""
        if self.proc is not None and self.proc.poll() is None:
            _signal(self.proc, sig, False)

    def wait(self, timeout=None):
        """Waits for the process to exit by itself; returns the exit code."""
        self.returncode = self.proc.wait(timeout)
        _unregister(self.proc)
        return self.returncode

    def kill9(self):
        """SIGKILL (crash simulation); returns the exit code (-9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _signal(self.proc, signal.SIGKILL, False)
        self.proc.wait()
        self.returncode = self.proc.returncode
        _unregister(self.proc)
        return self.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.running():
            try:
                self.stop()
            except NodeError:
                if exc_type is None:
                    raise
        return False

    # -- inspection ---------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=4000):
        return _tail(self.log(), n)

    def cli(self, *args, check=False, timeout=60):
        """Runs `BINARY ARGS...` (e.g. "check-config", "-c", path)."""
        r = subprocess.run([self.binary, *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout, env=self.env)
        if check and r.returncode != 0:
            raise ToolError(r.returncode, r.args, r.stdout + r.stderr)
        return r

    def status(self, timeout=60):
        """Parsed JSON of `status -c CONFIG --json --all --oldest-first`: every
        study, job and outbox item, oldest first (status pages otherwise)."""
        r = self.cli("status", "-c", self.config_path, "--json", "--all", "--oldest-first",
                     timeout=timeout)
        if r.returncode != 0:
            raise ToolError(r.returncode, r.args, r.stdout + r.stderr)
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise NodeError("status --json printed invalid JSON (%s):\n%s"
                            % (e, _tail(r.stdout))) from e

    def studies(self):
        return {s["study_uid"]: s for s in self.status().get("studies", [])}

    def instances_total(self):
        return sum(int(s.get("instances", 0)) for s in self.status().get("studies", []))

    def wait_for_study(self, study_uid, state=None, instances=None, timeout=30):
        """Polls status until the study exists (with that state / instance
        count when given); returns its status entry."""
        def check():
            s = self.studies().get(study_uid)
            if s is None:
                return None
            if state is not None and s.get("state") != state:
                return None
            if instances is not None and int(s.get("instances", -1)) != instances:
                return None
            return s
        return wait_until(check, timeout, 0.2,
                          "study %s state=%s instances=%s" % (study_uid, state, instances))

    def stored_files(self):
        """Sorted *.dcm paths under DATA_DIR/instances."""
        return [p for p in list_files(os.path.join(self.data_dir, "instances"))
                if p.endswith(".dcm")]


# --------------------------------------------------------------------------
# DCMTK tools

def _as_list(files):
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _dir_flags(files):
    return ["+sd", "+r"] if any(os.path.isdir(f) for f in files) else []


def _run_tool(cmd, check, timeout, env=None):
    require_tool(cmd[0])
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace",
                       timeout=timeout, env=dcmtk_env(env))
    if check and r.returncode != 0:
        raise ToolError(r.returncode, cmd, r.stdout)
    return r


def storescu(port, files, ae_called="AINODE", ae_calling="STORESCU", extra=(),
             check=True, host=LOOPBACK, timeout=600, verbose=True, env=None):
    """storescu [-v] -aet CALLING -aec CALLED EXTRA... HOST PORT FILES...

    Directories in files are scanned recursively. stdout+stderr are in
    .stdout. Note that exit 0 does not prove every store succeeded in every
    DCMTK version: check all_stores_succeeded(r.stdout) (needs verbose)."""
    files = _as_list(files)
    cmd = ["storescu"]
    if verbose and "-v" not in extra and "-d" not in extra:
        cmd.append("-v")
    cmd += ["-aet", ae_calling, "-aec", ae_called, *_dir_flags(files), *extra,
            host, str(port), *files]
    return _run_tool(cmd, check, timeout, env)


def dcmsend(port, files, ae_called="AINODE", ae_calling="DCMSEND", extra=(),
            check=True, host=LOOPBACK, timeout=600, verbose=True, env=None):
    """dcmsend [-v] -aet CALLING -aec CALLED EXTRA... HOST PORT FILES...
    (exits non-zero when a store fails, unless -nh is in extra)."""
    files = _as_list(files)
    cmd = ["dcmsend"]
    if verbose and "-v" not in extra and "-d" not in extra:
        cmd.append("-v")
    cmd += ["-aet", ae_calling, "-aec", ae_called, *_dir_flags(files), *extra,
            host, str(port), *files]
    return _run_tool(cmd, check, timeout, env)


def echoscu(port, ae_called="AINODE", ae_calling="ECHOSCU", extra=(),
            check=True, host=LOOPBACK, timeout=30, connect_timeout=5, env=None):
    """echoscu -aet CALLING -aec CALLED -to T -ta T -td T EXTRA... HOST PORT."""
    t = str(int(max(1, connect_timeout)))
    cmd = ["echoscu", "-aet", ae_calling, "-aec", ae_called,
           "-to", t, "-ta", t, "-td", t, *extra, host, str(port)]
    return _run_tool(cmd, check, timeout, env)


_RSP = re.compile(r"Received Store Response \(([^)]*)\)")
_SENDING = re.compile(r"Sending file: (.*)$")


def storescu_statuses(output):
    """Statuses of the C-STORE responses in `storescu -v` output, in order:
    e.g. ["Success", "Success", "Refused: OutOfResources"]."""
    return _RSP.findall(output or "")


def storescu_file_statuses(output):
    """{file: status} from `storescu -v` / `dcmsend -v`-style output
    (storescu only; files without a response are absent)."""
    result = {}
    current = None
    for line in (output or "").splitlines():
        m = _SENDING.search(line)
        if m:
            current = m.group(1).strip()
            continue
        m = _RSP.search(line)
        if m and current is not None:
            result[current] = m.group(1)
            current = None
    return result


def all_stores_succeeded(output, expected=None):
    """True if every response in storescu -v output is Success (and, when
    expected is given, there are exactly that many)."""
    st = storescu_statuses(output)
    if expected is not None and len(st) != expected:
        return False
    return bool(st) and all(s == "Success" for s in st)


class StoreSCP:
    """DCMTK storescp on a free loopback port, writing received files to out_dir.

    StoreSCP(out_dir, aet="STORESCP", port=None, fork=False, extra=(),
             log_path=None, echo_extra=())
    The log goes to log_path (default: OUT_DIR.log next to out_dir, so that
    out_dir holds only received objects). storescp runs as the leader of its
    own process group; stop() signals that group so --fork children go too.
    echo_extra: echoscu options of the start-up C-ECHO (e.g. TLS ones when
    extra holds +tls).
    """

    def __init__(self, out_dir, aet="STORESCP", port=None, fork=False,
                 extra=(), log_path=None, echo_extra=()):
        self.out_dir = os.path.abspath(out_dir)
        self.aet = aet
        self.port = port or free_port()
        self.fork = fork
        self.extra = list(extra)
        self.echo_extra = list(echo_extra)
        self.log_path = log_path or (self.out_dir.rstrip("/") + ".log")
        self.proc = None
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True, timeout=START_TIMEOUT):
        if self.running():
            raise HarnessError("storescp already running (pid %d)" % self.proc.pid)
        os.makedirs(self.out_dir, exist_ok=True)
        require_tool("storescp")
        cmd = ["storescp", "-od", self.out_dir, "-aet", self.aet]
        if self.fork:
            cmd.append("--fork")
        cmd += self.extra + [str(self.port)]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=dcmtk_env(),
                                         start_new_session=True)
        finally:
            log.close()
        _register(self.proc, group=True)
        if wait:
            deadline = time.monotonic() + timeout
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    self.stop()
                    raise HarnessError("storescp exited with %d:\n%s" % (rc, self.log_tail()))
                if echoscu(self.port, ae_called=self.aet, check=False, extra=self.echo_extra,
                           timeout=10, connect_timeout=2).returncode == 0:
                    break
                if time.monotonic() >= deadline:
                    self.stop()
                    raise HarnessError("storescp did not answer C-ECHO within %.0f s:\n%s"
                                       % (timeout, self.log_tail()))
                time.sleep(0.05)
        return self

    def stop(self, timeout=10):
        """SIGTERM to the process group, SIGKILL after timeout; returns the
        leader's exit code (storescp dies of the signal: -15)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _signal(self.proc, signal.SIGTERM, True)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(self.proc, signal.SIGKILL, True)
                self.proc.wait()
        # fork children still in the group (if any) get the same treatment
        _signal(self.proc, signal.SIGKILL, True)
        self.returncode = self.proc.returncode
        _unregister(self.proc)
        return self.returncode

    def files(self):
        return list_files(self.out_dir)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=4000):
        return _tail(self.log(), n)

    def __enter__(self):
        if not self.running():
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False


# --------------------------------------------------------------------------
# Files

def list_files(root):
    """Sorted paths of all regular files under root ([] if it does not exist)."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p):
                out.append(p)
    out.sort()
    return out


def _meta_end(data, path):
    if len(data) < 132 or data[128:132] != b"DICM":
        raise ValueError("%s: not a DICOM Part-10 file (no DICM prefix)" % path)
    off = 132
    # Normal case: (0002,0000) UL 4 <group length>
    if data[off:off + 8] == b"\x02\x00\x00\x00UL\x04\x00" and len(data) >= off + 12:
        (glen,) = struct.unpack_from("<I", data, off + 8)
        end = off + 12 + glen
        if end > len(data):
            raise ValueError("%s: meta group length %d runs past end of file" % (path, glen))
        return end
    # No group length: walk the explicit VR little endian group 0002.
    while off + 8 <= len(data):
        group, _elem = struct.unpack_from("<HH", data, off)
        if group != 0x0002:
            return off
        vr = data[off + 4:off + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV",
                  b"UC", b"UR", b"SV", b"UV"):
            (length,) = struct.unpack_from("<I", data, off + 8)
            off += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, off + 6)
            off += 8 + length
    return off


def dataset_bytes(path):
    """The bytes of a Part-10 file after its File Meta Information group."""
    with open(path, "rb") as f:
        data = f.read()
    return data[_meta_end(data, path):]


# --------------------------------------------------------------------------
# Self-test

def _selftest():
    import tempfile
    import textwrap

    import pydicom
    from gen_series import make_ct_series, make_study

    tmp = tempfile.mkdtemp(prefix="ainode-harness-")
    ok = False
    try:
        # 1. files
        files = make_ct_series(os.path.join(tmp, "in"), 6, rows=64, cols=64, seed=3)
        study = make_study(os.path.join(tmp, "study"),
                           [{"slices": 3}, {"slices": 2, "modality": "MR"}],
                           rows=32, cols=32)
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Rows == 64
        assert [s["modality"] for s in study["series"]] == ["CT", "MR"]
        body = dataset_bytes(files[0])
        assert body[:4] == b"\x08\x00\x05\x00", body[:8]  # (0008,0005) first
        assert len(body) > 64 * 64 * 2

        # 2. storescp + storescu, byte identity of the data set
        with StoreSCP(os.path.join(tmp, "scp")) as scp:
            echoscu(scp.port, ae_called=scp.aet)
            r = storescu(scp.port, files, ae_called=scp.aet)
            assert all_stores_succeeded(r.stdout, len(files)), r.stdout
            fs = storescu_file_statuses(r.stdout)
            assert set(fs) == set(files) and set(fs.values()) == {"Success"}, fs
            got = scp.files()
            assert len(got) == len(files), got
            for p in files:
                uid = pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                q = os.path.join(scp.out_dir, "CT." + uid)
                assert dataset_bytes(p) == dataset_bytes(q), "dataset differs: %s" % p
            # a directory argument, the multi-series study, via dcmsend
            r = dcmsend(scp.port, os.path.join(tmp, "study"), ae_called=scp.aet)
            assert len(scp.files()) == len(files) + 5, scp.files()
            pid = scp.pid
        assert not scp.running()
        try:
            os.kill(pid, 0)
            raise AssertionError("storescp pid %d still alive" % pid)
        except ProcessLookupError:
            pass

        # 3. storescp --fork, concurrent associations
        with StoreSCP(os.path.join(tmp, "scpf"), fork=True) as scp:
            procs = [subprocess.Popen([require_tool("storescu"), "-aec", scp.aet, LOOPBACK, str(scp.port), f],
                                      env=dcmtk_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for f in files]
            assert all(p.wait(60) == 0 for p in procs)
            assert len(scp.files()) == len(files)

        # 4. a failing store is seen as such
        with StoreSCP(os.path.join(tmp, "scpbad")) as scp:
            os.rmdir(scp.out_dir)
            r = storescu(scp.port, files[:2], ae_called=scp.aet, check=False)
            assert not all_stores_succeeded(r.stdout), r.stdout
            assert storescu_statuses(r.stdout), r.stdout

        # 5. Node: config text and start-up failure paths (no ainode needed)
        n = Node("/bin/false", os.path.join(tmp, "n1"), max_associations=4,
                 allowed_callers=["A1", "B 2"], log_level=None,
                 sections={"destinations": [{"name": "pacs", "ae_title": "PACS",
                                             "host": "127.0.0.1", "port": 104}]})
        txt = open(n.config_path).read()
        want = textwrap.dedent("""\
            node:
              ae_title: AINODE
              port: %d
              bind: "127.0.0.1"
              data_dir: %s
              stable_seconds: 2
              max_associations: 4
              allowed_callers: [A1, "B 2"]
            destinations:
              - name: pacs
                ae_title: PACS
                host: "127.0.0.1"
                port: 104
            """) % (n.port, n.data_dir)
        assert txt == want, "config:\n" + txt
        assert os.path.isdir(n.data_dir)
        try:
            n.start()
            raise AssertionError("start of /bin/false did not raise")
        except NodeError as e:
            assert "exited with 1" in str(e), e
        sleeper = write_config(os.path.join(tmp, "sleeper.sh"),
                               "#!/bin/sh\necho listening-not >&2\nexec sleep 60\n")
        os.chmod(sleeper, 0o755)
        with Node(sleeper, os.path.join(tmp, "n2")) as n2:
            t0 = time.monotonic()
            try:
                n2.start(timeout=1.5)
                raise AssertionError("start of a silent process did not raise")
            except NodeError as e:
                assert "listening-not" in str(e), e
            assert time.monotonic() - t0 < 10
            assert not n2.running()
        # stop() of a process that honours SIGTERM returns its code
        n3 = Node(sleeper, os.path.join(tmp, "n3"))
        n3.start(wait=False)
        assert n3.running()
        assert n3.stop(5) == -signal.SIGTERM
        assert n3.pid and not n3.running()
        assert not _live, _live
        ok = True
    finally:
        _stop_leftovers()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("selftest files kept in", tmp, file=sys.stderr)
    print("PASS")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        sys.exit(_selftest())
    print("usage: %s --selftest" % sys.argv[0], file=sys.stderr)
    sys.exit(2)
