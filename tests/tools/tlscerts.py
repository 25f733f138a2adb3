#!/usr/bin/python3
"""Test certificates for DICOM TLS, made with the openssl command line.

    pki = make_pki(folder)
    pki.ca, pki.server_key, pki.server_crt, pki.client_key, pki.client_crt
    pki.other_ca, pki.rogue_key, pki.rogue_crt    (a client signed by another CA)
    pki.expired_key, pki.expired_crt              (a server certificate of pki.ca
                                                   that expired in 2020)

RSA 2048 keys (the BCP 195 minimum), unencrypted; server certificates name
localhost and 127.0.0.1. The expired one is issued by `openssl ca` with
explicit -startdate/-enddate, since OpenSSL 3.0's x509 cannot back-date.
"""

import os
import subprocess
import types


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), r.stdout))
    return r.stdout


def _ca(folder, name, subject):
    key = os.path.join(folder, name + ".key")
    crt = os.path.join(folder, name + ".crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
             "-days", "30", "-subj", subject, "-sha256",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, crt


def _ext_file(folder, name, server):
    path = os.path.join(folder, name + ".ext")
    with open(path, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write("keyUsage=digitalSignature,keyEncipherment\n")
        if server:
            f.write("extendedKeyUsage=serverAuth,clientAuth\n")
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    return path


def _leaf(folder, name, subject, ca_key, ca_crt, server):
    key = os.path.join(folder, name + ".key")
    csr = os.path.join(folder, name + ".csr")
    crt = os.path.join(folder, name + ".crt")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", subject)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
             "-out", crt, "-days", "30", "-sha256",
             "-extfile", _ext_file(folder, name, server))
    return key, crt


def _expired(folder, name, subject, ca_key, ca_crt):
    """A server certificate of CA valid from 2019 to 2020 only."""
    key = os.path.join(folder, name + ".key")
    csr = os.path.join(folder, name + ".csr")
    crt = os.path.join(folder, name + ".crt")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", subject)
    db = os.path.join(folder, "ca-db")
    os.makedirs(os.path.join(db, "new"), exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("1000\n")
    conf = os.path.join(db, "ca.cnf")
    with open(conf, "w") as f:
        f.write("[ca]\ndefault_ca = test\n"
                "[test]\n"
                "database = %s/index.txt\nserial = %s/serial\nnew_certs_dir = %s/new\n"
                "default_md = sha256\npolicy = any\nunique_subject = no\n"
                "copy_extensions = none\nx509_extensions = leaf\n"
                "[any]\ncommonName = supplied\n"
                "[leaf]\nbasicConstraints = CA:FALSE\n"
                "keyUsage = digitalSignature,keyEncipherment\n"
                "extendedKeyUsage = serverAuth,clientAuth\n"
                "subjectAltName = DNS:localhost,IP:127.0.0.1\n" % (db, db, db))
    _openssl("ca", "-batch", "-config", conf, "-cert", ca_crt, "-keyfile", ca_key,
             "-in", csr, "-out", crt, "-startdate", "20190101000000Z",
             "-enddate", "20200101000000Z", "-notext")
    return key, crt


def make_pki(folder):
    os.makedirs(folder, exist_ok=True)
    ca_key, ca = _ca(folder, "ca", "/CN=ainode test CA")
    other_key, other_ca = _ca(folder, "other-ca", "/CN=another test CA")
    server_key, server_crt = _leaf(folder, "server", "/CN=localhost", ca_key, ca, True)
    client_key, client_crt = _leaf(folder, "client", "/CN=test client", ca_key, ca, False)
    rogue_key, rogue_crt = _leaf(folder, "rogue", "/CN=rogue client", other_key, other_ca,
                                 False)
    rogue_server_key, rogue_server_crt = _leaf(folder, "rogue-server", "/CN=localhost",
                                               other_key, other_ca, True)
    expired_key, expired_crt = _expired(folder, "expired", "/CN=localhost", ca_key, ca)
    return types.SimpleNamespace(
        folder=folder, ca=ca, other_ca=other_ca,
        server_key=server_key, server_crt=server_crt,
        client_key=client_key, client_crt=client_crt,
        rogue_key=rogue_key, rogue_crt=rogue_crt,
        rogue_server_key=rogue_server_key, rogue_server_crt=rogue_server_crt,
        expired_key=expired_key, expired_crt=expired_crt)


if __name__ == "__main__":
    import sys
    p = make_pki(sys.argv[1] if len(sys.argv) > 1 else "pki")
    print("\n".join("%s=%s" % kv for kv in sorted(vars(p).items())))
