#!/usr/bin/python3
"""A minimal DICOM Upper Layer client and server for the tests that DCMTK's
tools cannot express: holding associations open, sending a C-STORE whose data
set is garbage, truncated or inconsistent with its command, and a peer that
rejects associations, refuses a SOP class or answers each C-STORE with a
chosen status. It speaks the real protocol (PS3.8 PDUs, PS3.7 command sets)
over a real socket.

As a server (run as a process of its own, stopped by its PID):
    rawscu.py scp PORT [--reject RESULT,SOURCE,REASON] [--status 0xA700]
                       [--refuse-class UID]...
"""

import argparse
import socket
import struct
import sys

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPL_CLASS_UID = b"1.2.826.0.1.3680043.8.498.1"


class Rejected(Exception):
    def __init__(self, result, source, reason):
        super().__init__("A-ASSOCIATE-RJ result=%d source=%d reason=%d" % (result, source, reason))
        self.result, self.source, self.reason = result, source, reason


class Aborted(Exception):
    pass


def _item(item_type, payload):
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _ae(title):
    """16 bytes of TITLE: str as ASCII, or bytes as they are (to send what a
    well-behaved peer never would)."""
    raw = title if isinstance(title, bytes) else title.encode("ascii")
    return raw.ljust(16, b" ")[:16]


def _even_uid(uid):
    b = uid.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def _element(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def _us(v):
    return struct.pack("<H", v)


class _Conn:
    """PDUs over a connected socket (both sides of the protocol use it)."""

    def __init__(self, sock):
        self.sock = sock

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Aborted("connection closed by peer")
            buf += chunk
        return buf

    def read_pdu(self):
        pdu_type, _, length = struct.unpack(">BBI", self.recv_exact(6))
        return pdu_type, self.recv_exact(length)

    def send_pdu(self, pdu_type, body):
        self.sock.sendall(struct.pack(">BBI", pdu_type, 0, len(body)) + body)


def associate_rq(called="AINODE", calling="RAWSCU", contexts=None):
    """The A-ASSOCIATE-RQ PDU (bytes) and {pcid: abstract syntax} it proposes;
    contexts is a list of (abstract syntax, [transfer syntaxes])."""
    contexts = contexts or [(CT_STORAGE, [EXPLICIT_LE]), (VERIFICATION, [IMPLICIT_LE])]
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    body += _item(0x10, APP_CONTEXT)
    proposed = {}
    for i, (abstract, tss) in enumerate(contexts):
        pcid = 2 * i + 1
        proposed[pcid] = abstract
        sub = _item(0x30, abstract.encode("ascii"))
        for ts in tss:
            sub += _item(0x40, ts.encode("ascii"))
        body += _item(0x20, struct.pack(">BBBB", pcid, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPL_CLASS_UID)
    body += _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body, proposed


class Association(_Conn):
    """One association; contexts is a list of (abstract syntax, [transfer syntaxes]).
    With ssl_context (an ssl.SSLContext), the association runs over TLS."""

    def __init__(self, port, called="AINODE", calling="RAWSCU", contexts=None, host="127.0.0.1",
                 timeout=30, ssl_context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if ssl_context is not None:
                self.sock = ssl_context.wrap_socket(self.sock)
            self._negotiate(called, calling, contexts)
        except BaseException:
            self.sock.close()  # a rejected or failed request leaves no socket behind
            raise

    def _negotiate(self, called, calling, contexts):
        pdu, self.proposed = associate_rq(called, calling, contexts)
        self.sock.sendall(pdu)
        pdu_type, data = self.read_pdu()
        if pdu_type == 0x03:
            raise Rejected(data[1], data[2], data[3])
        if pdu_type != 0x02:
            raise Aborted("unexpected PDU type 0x%02x" % pdu_type)
        self.accepted = {}  # pcid -> transfer syntax
        off = 68
        while off < len(data):
            itype, _, ilen = struct.unpack(">BBH", data[off:off + 4])
            payload = data[off + 4:off + 4 + ilen]
            if itype == 0x21:
                pcid, result = payload[0], payload[2]
                ts_len = struct.unpack(">H", payload[6:8])[0]
                ts = payload[8:8 + ts_len].rstrip(b"\0").decode("ascii")
                if result == 0:
                    self.accepted[pcid] = ts
            off += 4 + ilen
        self.message_id = 0

    def context_for(self, abstract):
        for pcid, a in self.proposed.items():
            if a == abstract and pcid in self.accepted:
                return pcid
        raise KeyError("no accepted presentation context for " + abstract)

    def _send_pdv(self, pcid, data, command, max_fragment=16000):
        chunks = [data[i:i + max_fragment] for i in range(0, len(data), max_fragment)] or [b""]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            control = (1 if command else 0) | (2 if last else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, pcid, control) + chunk
            self.send_pdu(0x04, pdv)

    def _read_command(self):
        command = b""
        while True:
            pdu_type, data = self.read_pdu()
            if pdu_type == 0x07:
                raise Aborted("A-ABORT received")
            if pdu_type != 0x04:
                raise Aborted("unexpected PDU type 0x%02x" % pdu_type)
            off = 0
            while off < len(data):
                length = struct.unpack(">I", data[off:off + 4])[0]
                control = data[off + 5]
                command += data[off + 6:off + 4 + length]
                off += 4 + length
                if control & 1 and control & 2:
                    return _parse_command(command)

    def echo(self):
        pcid = self.context_for(VERIFICATION)
        self.message_id += 1
        cmd = _command([(0x0002, _even_uid(VERIFICATION)), (0x0100, _us(0x0030)),
                        (0x0110, _us(self.message_id)), (0x0800, _us(0x0101))])
        self._send_pdv(pcid, cmd, True)
        return self._read_command().get(0x0900)

    def store(self, sop_class, sop_instance, dataset_bytes):
        """Sends one C-STORE-RQ with DATASET_BYTES as its data set; returns the status."""
        pcid = self.context_for(sop_class)
        self.message_id += 1
        cmd = _command([(0x0002, _even_uid(sop_class)), (0x0100, _us(0x0001)),
                        (0x0110, _us(self.message_id)), (0x0700, _us(0)),
                        (0x0800, _us(0x0000)), (0x1000, _even_uid(sop_instance))])
        self._send_pdv(pcid, cmd, True)
        self._send_pdv(pcid, dataset_bytes, False)
        return self._read_command().get(0x0900)

    def release(self):
        self.send_pdu(0x05, b"\0" * 4)
        try:
            pdu_type, _ = self.read_pdu()
        finally:
            self.sock.close()
        return pdu_type == 0x06

    def abort(self):
        try:
            self.send_pdu(0x07, b"\0" * 4)
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


def _command(elements):
    body = b"".join(_element(0x0000, e, v) for e, v in elements)
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def _parse_command(data):
    """Returns {element: int value} for the US elements of a command set."""
    out, off = {}, 0
    while off + 8 <= len(data):
        group, elem, length = struct.unpack("<HHI", data[off:off + 8])
        value = data[off + 8:off + 8 + length]
        if length == 2:
            out[elem] = struct.unpack("<H", value)[0]
        off += 8 + length
    return out


# ---------------------------------------------------------------- server

def _items(data, off):
    """(type, payload) of the items of an association PDU body from OFF."""
    out = []
    while off + 4 <= len(data):
        itype, _, ilen = struct.unpack(">BBH", data[off:off + 4])
        out.append((itype, data[off + 4:off + 4 + ilen]))
        off += 4 + ilen
    return out


def _command_values(data):
    """{element: raw value} of a command set."""
    out, off = {}, 0
    while off + 8 <= len(data):
        _, elem, length = struct.unpack("<HHI", data[off:off + 8])
        out[elem] = data[off + 8:off + 8 + length]
        off += 8 + length
    return out



def serve_one(conn, reject=None, status=0, refuse_classes=()):
    """Handles one association on CONN (a _Conn)."""
    pdu_type, rq = conn.read_pdu()
    if pdu_type != 0x01:
        return
    if reject:
        conn.send_pdu(0x03, struct.pack(">BBBB", 0, *reject))
        return
    called, calling = rq[4:20], rq[20:36]
    body = struct.pack(">HH", 1, 0) + called + calling + b"\0" * 32
    body += _item(0x10, APP_CONTEXT)
    for itype, payload in _items(rq, 68):
        if itype != 0x20:
            continue
        pcid = payload[0]
        subs = _items(payload, 4)
        abstract = next(v for t, v in subs if t == 0x30).rstrip(b"\0").decode("ascii")
        ts = next(v for t, v in subs if t == 0x40)
        result = 3 if abstract in refuse_classes else 0  # 3: abstract syntax not supported
        body += _item(0x21, struct.pack(">BBBB", pcid, 0, result, 0) + _item(0x40, ts))
    body += _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPL_CLASS_UID))
    conn.send_pdu(0x02, body)
    command, in_data = b"", False
    while True:
        pdu_type, data = conn.read_pdu()
        if pdu_type == 0x05:
            conn.send_pdu(0x06, b"\0" * 4)
            return
        if pdu_type != 0x04:
            return
        off = 0
        while off < len(data):
            length = struct.unpack(">I", data[off:off + 4])[0]
            pcid, control = data[off + 4], data[off + 5]
            fragment = data[off + 6:off + 4 + length]
            off += 4 + length
            if control & 1:
                command += fragment
                if not control & 2:
                    continue
                values = _command_values(command)
                command = b""
                field = struct.unpack("<H", values[0x0100])[0]
                has_data = struct.unpack("<H", values[0x0800])[0] != 0x0101
                if field == 0x0030:  # C-ECHO-RQ
                    rsp = [(0x0002, values[0x0002]), (0x0100, _us(0x8030)),
                           (0x0120, values[0x0110]), (0x0800, _us(0x0101)), (0x0900, _us(0))]
                    _send_command(conn, pcid, rsp)
                elif field == 0x0001:  # C-STORE-RQ: answered once its data set is in
                    pending = (pcid, values)
                    in_data = has_data
                    if not in_data:
                        _store_rsp(conn, pending, status)
            elif control & 2 and in_data:
                in_data = False
                _store_rsp(conn, pending, status)


def _send_command(conn, pcid, elements):
    cmd = _command(elements)
    conn.send_pdu(0x04, struct.pack(">IBB", len(cmd) + 2, pcid, 3) + cmd)


def _store_rsp(conn, pending, status):
    pcid, values = pending
    _send_command(conn, pcid, [(0x0002, values[0x0002]), (0x0100, _us(0x8001)),
                               (0x0120, values[0x0110]), (0x0800, _us(0x0101)),
                               (0x0900, _us(status)), (0x1000, values[0x1000])])


def scp_main(argv):
    ap = argparse.ArgumentParser(prog="rawscu.py scp")
    ap.add_argument("port", type=int)
    ap.add_argument("--reject", help="RESULT,SOURCE,REASON of an A-ASSOCIATE-RJ")
    ap.add_argument("--status", default="0", help="status of every C-STORE-RSP")
    ap.add_argument("--refuse-class", action="append", default=[],
                    help="abstract syntax whose presentation contexts are refused")
    args = ap.parse_args(argv)
    reject = tuple(int(v) for v in args.reject.split(",")) if args.reject else None
    status = int(args.status, 0)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    print("listening on 127.0.0.1:%d" % args.port, flush=True)
    while True:
        sock, _ = srv.accept()
        sock.settimeout(30)
        try:
            serve_one(_Conn(sock), reject, status, args.refuse_class)
        except (Aborted, OSError, KeyError, StopIteration, struct.error) as e:
            print("association ended: %r" % e, file=sys.stderr, flush=True)
        finally:
            sock.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "scp":
        scp_main(sys.argv[2:])
    else:
        sys.exit(__doc__)
