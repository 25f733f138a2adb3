#!/usr/bin/python3
"""The .deb and the systemd unit.

The tests that read the package build it with `cpack -G DEB` from the build
tree of the binary under test (already built: cpack installs it into a
staging folder of the test's own and packs it, in seconds) and unpack it
with `dpkg-deb -x` into a fresh root, whose /usr/bin/ainode checks the
packaged /etc/ainode/ainode.yaml: the built-in models it names are found in
that root's /usr/share/ainode/models (the binary looks beside itself, as
../share/ainode/models). The package carries the man page as the build made
it (gzip -9n) and the administrator's documents. deploy/ainode.service is
checked by `systemd-analyze verify`, in a copy naming the binary under test.
"""

import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

UNIT = os.path.join(harness.REPO_ROOT, "deploy", "ainode.service")
FILES = [
    "./usr/bin/ainode",
    "./usr/share/ainode/models/ct-bone-body.pt",
    "./usr/share/ainode/models/ct-bone-body.yaml",
    "./etc/ainode/ainode.yaml",
    "./lib/systemd/system/ainode.service",
    "./usr/share/doc/ainode/README.md",
    "./usr/share/doc/ainode/configuration.md",
    "./usr/share/doc/ainode/admin-guide.md",
    "./usr/share/doc/ainode/conformance-statement.md",
    "./usr/share/man/man8/ainode.8.gz",
]


def run(args, **kw):
    return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300, **kw)


class PackageTest(unittest.TestCase):
    """Each ctest runs one of these in a process of its own: the package is
    built only by the tests that read it (package(), once per process)."""

    @classmethod
    def setUpClass(cls):
        cls.binary = os.path.abspath(harness.default_binary())
        cls.build_dir = os.path.dirname(cls.binary)
        cls.tmp = tempfile.mkdtemp(prefix="ainode-package-")
        cls.deb = None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def package(self):
        """Builds the .deb (cpack) and unpacks it into self.root."""
        cls = type(self)
        if cls.deb:
            return
        cpack = harness.require_tool("cpack")
        harness.require_tool("dpkg-deb")
        harness.require_tool("dpkg-shlibdeps")  # CPACK_DEBIAN_PACKAGE_SHLIBDEPS
        out = os.path.join(cls.tmp, "out")
        r = run([cpack, "-G", "DEB", "--config",
                 os.path.join(cls.build_dir, "CPackConfig.cmake"), "-B", out])
        self.assertEqual(r.returncode, 0, "cpack failed:\n" + r.stdout + r.stderr)
        debs = glob.glob(os.path.join(out, "ainode_*.deb"))
        self.assertEqual(len(debs), 1, "cpack made %r, not one ainode_*.deb" % debs)
        root = os.path.join(cls.tmp, "root")
        r = run(["dpkg-deb", "-x", debs[0], root])
        self.assertEqual(r.returncode, 0, "dpkg-deb -x failed:\n" + r.stderr)
        cls.deb, cls.root = debs[0], root

    def field(self, name):
        r = run(["dpkg-deb", "-f", self.deb, name])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def test_deb_holds_the_fhs_paths_its_dependencies_conffile_and_scripts(self):
        self.package()
        # The files, where the FHS puts them; none under /usr/local.
        r = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = {line.split()[-1]: line.split()[0] for line in r.stdout.splitlines()}
        for path in FILES:
            self.assertIn(path, listed, r.stdout)
        self.assertEqual(listed["./usr/bin/ainode"], "-rwxr-xr-x")
        self.assertFalse([p for p in listed if p.startswith("./usr/local")], r.stdout)
        with open(os.path.join(self.root, "lib/systemd/system/ainode.service")) as f, \
                open(UNIT) as g:
            self.assertEqual(f.read(), g.read())
        # Depends: what dpkg-shlibdeps found from the binary's shared
        # libraries, and adduser for postinst.
        self.assertEqual(self.field("Package"), "ainode")
        depends = self.field("Depends")
        for package in ("libc6", "libuv1", "libsystemd0", "libsqlite3-0", "libfyaml0",
                        "libjansson4", "adduser"):
            self.assertRegex(depends, r"(^|, )%s( \(|,|$)" % re.escape(package), depends)
        self.assertRegex(depends, r"(^|, )libdcmtk\d+ ", depends)
        self.assertRegex(depends, r"(^|, )libtorch[\d.]+ ", depends)
        # The configuration is a conffile; the scripts make the user.
        control = os.path.join(self.tmp, "control")
        r = run(["dpkg-deb", "-e", self.deb, control])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/ainode/ainode.yaml"])
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(control, script)
            self.assertTrue(os.access(path, os.X_OK), script)
            r = run(["sh", "-n", path])
            self.assertEqual(r.returncode, 0, script + ": " + r.stderr)
        with open(os.path.join(control, "postinst")) as f:
            postinst = f.read()
        self.assertRegex(postinst, r"adduser [^\n]*--system --group --home /var/lib/ainode")
        self.assertIn("chown ainode:ainode /var/lib/ainode", postinst)

    def test_deb_holds_the_man_page_compressed_as_debian_wants_and_the_admin_documents(self):
        self.package()
        with open(os.path.join(self.root, "usr/share/man/man8/ainode.8.gz"), "rb") as f:
            packed = f.read()
        # gzip -9n: no file name (FLG.FNAME), no time (MTIME 0), best
        # compression (XFL 2), so that the same page packs the same bytes.
        self.assertEqual(packed[:3], b"\x1f\x8b\x08")
        self.assertEqual((packed[3] & 0x08, packed[4:8], packed[8]), (0, bytes(4), 2))
        with open(os.path.join(self.build_dir, "man", "ainode.8"), "rb") as f:
            self.assertEqual(gzip.decompress(packed), f.read())
        for doc in ("admin-guide.md", "conformance-statement.md", "configuration.md"):
            with open(os.path.join(self.root, "usr/share/doc/ainode", doc), "rb") as f, \
                    open(os.path.join(harness.REPO_ROOT, "docs", doc), "rb") as g:
                self.assertEqual(f.read(), g.read(), doc)

    def test_unpacked_binary_checks_the_packaged_config_with_its_own_models(self):
        self.package()
        config = os.path.join(self.root, "etc", "ainode", "ainode.yaml")
        with open(config) as f:
            text = f.read()
        self.assertRegex(text, r"\n  data_dir: /var/lib/ainode\n")
        self.assertIn("file: builtin:ct-bone-body", text)
        binary = os.path.join(self.root, "usr", "bin", "ainode")
        r = run([binary, "check-config", "-c", config])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "%s: OK" % config)
        # The models it found are the root's own: without them the check fails.
        models = os.path.join(self.root, "usr", "share", "ainode", "models")
        os.rename(models, models + ".away")
        try:
            r = run([binary, "check-config", "-c", config])
        finally:
            os.rename(models + ".away", models)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("unknown built-in model 'ct-bone-body'", r.stderr)

    def test_ainode_without_c_reads_etc_ainode(self):
        r = run([self.binary, "check-config"])
        self.assertIn("/etc/ainode/ainode.yaml", r.stdout + r.stderr)

    def test_unit_passes_systemd_analyze_verify(self):
        with open(UNIT) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/ainode serve -c /etc/ainode/ainode.yaml\n", unit)
        for key in ("Type=notify", "User=ainode", "StateDirectory=ainode",
                    "ConfigurationDirectory=ainode", "ProtectSystem=strict", "PrivateTmp=true",
                    "NoNewPrivileges=true", "Restart=on-failure", "WatchdogSec="):
            self.assertRegex(unit, r"(?m)^%s" % re.escape(key))
        self.assertNotRegex(unit, r"(?m)^AmbientCapabilities=")  # only for a port < 1024
        # verify needs the binary to exist: a copy naming the one under test.
        here = os.path.join(self.tmp, "units")
        os.makedirs(here, exist_ok=True)
        copy = os.path.join(here, "ainode.service")
        with open(copy, "w") as f:
            f.write(unit.replace("/usr/bin/ainode", self.binary))
        r = run([harness.require_tool("systemd-analyze"), "verify", copy])
        said = [line for line in (r.stdout + r.stderr).splitlines() if "ainode" in line]
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(said, [])

if __name__ == "__main__":
    unittest.main()
