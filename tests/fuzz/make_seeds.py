#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/).

Run once by hand when a target is added; the corpora are committed, so the
test suite needs none of these tools. Images are synthetic (gen_series.py)
and small, each transfer syntax made with DCMTK's own converters; the JPEG
2000 seeds are the project's image fixtures.

    tests/fuzz/make_seeds.py
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from gen_series import make_ct_series  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")

# DCMTK converter and options per transfer syntax.
ENCODINGS = [
    ("implicit-le", ["dcmconv", "+ti"]),
    ("explicit-be", ["dcmconv", "+tb"]),
    ("deflated", ["dcmconv", "+td"]),
    ("rle", ["dcmcrle"]),
    ("jpeg-lossless", ["dcmcjpeg", "+e1"]),
    ("jpeg-baseline", ["dcmcjpeg", "+eb"]),
    ("jpegls-lossless", ["dcmcjpls", "+el"]),
    ("jpegls-near", ["dcmcjpls", "+en"]),
]


def fresh(name):
    d = os.path.join(CORPUS, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def images(tmp):
    src = make_ct_series(os.path.join(tmp, "ct"), 2, rows=16, cols=16, seed=3)
    out = []
    for i, path in enumerate(src):
        out.append(("ct%d-explicit-le.dcm" % i, path))
    for name, cmd in ENCODINGS:
        dst = os.path.join(tmp, "ct-%s.dcm" % name)
        subprocess.run(cmd + [src[0], dst], check=True)
        out.append(("ct-%s.dcm" % name, dst))
    fixtures = os.path.join(ROOT, "tests", "data", "image")
    for name in sorted(os.listdir(fixtures)):
        if os.path.getsize(os.path.join(fixtures, name)) <= 8192:
            out.append((name, os.path.join(fixtures, name)))
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        imgs = images(tmp)
        for target in ("image", "intake"):
            d = fresh(target)
            for name, path in imgs:
                shutil.copy(path, os.path.join(d, name))
    d = fresh("config")
    for name in ("full.yaml", "models.yaml", "only_node.yaml", "empty.yaml"):
        shutil.copy(os.path.join(ROOT, "tests", "data", "config", name), os.path.join(d, name))
    shutil.copy(os.path.join(ROOT, "deploy", "ainode.yaml"), os.path.join(d, "deploy.yaml"))
    d = fresh("rules")
    # Fields in attr.def order, NUL-separated (see fuzz_rules.c); the first
    # byte is also the instance count.
    seeds = {
        "ct-chest": ["1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2",
                     "CT", "CHEST"],
        "empty": [],
        "long": ["x" * 300] * 12,
    }
    for name, fields in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"\0".join(v.encode() for v in fields))
    print("seeds written under", CORPUS)


if __name__ == "__main__":
    main()
