#!/bin/sh
# Installs every Debian 12 package that building, running and testing ainode need.
# Safe to run again; needs root (uses sudo when not root).
set -eu

PACKAGES="
  cmake pkg-config gcc g++ make
  libdcmtk-dev dcmtk libopenjp2-7-dev libtorch-dev
  libuv1-dev libsqlite3-dev libssl-dev libfyaml-dev libjansson-dev zlib1g-dev libpcre2-dev
  libcmocka-dev clang libclang-rt-14-dev
  libmicrohttpd-dev prometheus chromium openssl
  libsystemd-dev systemd dpkg-dev fakeroot adduser groff-base man-db
  dicom3tools python3 python3-pydicom python3-numpy python3-torch python3-yaml
"
# Node.js runs the viewer-side checks (dcmjs). A machine that already has a
# node with its own npm (e.g. a nodejs package that bundles npm) keeps it:
# Debian's npm package conflicts with such a nodejs.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES="$PACKAGES nodejs npm"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $PACKAGES
