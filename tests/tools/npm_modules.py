"""A pinned npm package, installed once into a cache outside the repository.

    from npm_modules import npm_modules
    modules = npm_modules("dcmjs", "0.52.2")     # .../node_modules
    subprocess.run(["node", script], env=dict(os.environ, NODE_PATH=modules))

The package goes to $XDG_CACHE_HOME (or ~/.cache)/ainode-tests/npm/NAME-VERSION
the first time it is asked for, with `npm install` from the registry, and is
reused after that. A missing npm or a failed install raises (the caller that
needs the package fails, never skips); so does a cache holding another
version.
"""

import json
import os
import shutil
import subprocess

NPM_MISSING = ("required program 'npm' is not installed or not on PATH (Debian package npm; "
               "deploy/setup-debian.sh installs it)")


class NpmError(RuntimeError):
    pass


def cache_root():
    """$XDG_CACHE_HOME or ~/.cache, then ainode-tests/npm."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ainode-tests", "npm")


def npm_modules(name, version, missing_error=NpmError, timeout=300):
    """The node_modules folder holding npm package NAME at exactly VERSION
    (and its dependencies), installed into the cache when not there yet.
    A missing npm raises MISSING_ERROR(message); a failed install or a
    cache holding another version raises NpmError."""
    prefix = os.path.join(cache_root(), "%s-%s" % (name.lstrip("@").replace("/", "+"), version))
    modules = os.path.join(prefix, "node_modules")
    package = os.path.join(modules, *name.split("/"), "package.json")
    if not os.path.exists(package):
        npm = shutil.which("npm")
        if not npm:
            raise missing_error(NPM_MISSING)
        # Installed beside the cache and renamed into place: a caller running
        # at the same time never sees half an install.
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        staging = "%s.%d" % (prefix, os.getpid())
        shutil.rmtree(staging, ignore_errors=True)
        r = subprocess.run([npm, "install", "--prefix", staging, "--no-audit", "--no-fund",
                            "--ignore-scripts", "--no-save", "%s@%s" % (name, version)],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise NpmError("npm install %s@%s failed (exit %d): %s"
                           % (name, version, r.returncode, (r.stdout + r.stderr)[-3000:]))
        try:
            os.rename(staging, prefix)
        except OSError:  # another caller got there first, or something else did
            shutil.rmtree(staging, ignore_errors=True)
            if not os.path.exists(package):
                raise NpmError("%s exists but holds no %s: remove it" % (prefix, name))
    with open(package) as f:
        got = json.load(f)["version"]
    if got != version:
        raise NpmError("%s holds %s %s, not %s" % (prefix, name, got, version))
    return modules
