#!/usr/bin/python3
"""A minimal DICOM Upper Layer client for the tests that DCMTK's tools
cannot express: holding associations open, and sending a C-STORE whose data
set is garbage, truncated or inconsistent with its command. It speaks the
real protocol (PS3.8 PDUs, PS3.7 command sets) over a real socket."""

import socket
import struct

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
    return title.encode("ascii").ljust(16, b" ")[:16]


def _even_uid(uid):
    b = uid.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def _element(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def _us(v):
    return struct.pack("<H", v)


class Association:
    """One association; contexts is a list of (abstract syntax, [transfer syntaxes])."""

    def __init__(self, port, called="AINODE", calling="RAWSCU", contexts=None, host="127.0.0.1",
                 timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        contexts = contexts or [(CT_STORAGE, [EXPLICIT_LE]), (VERIFICATION, [IMPLICIT_LE])]
        body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
        body += _item(0x10, APP_CONTEXT)
        self.proposed = {}
        for i, (abstract, tss) in enumerate(contexts):
            pcid = 2 * i + 1
            self.proposed[pcid] = abstract
            sub = _item(0x30, abstract.encode("ascii"))
            for ts in tss:
                sub += _item(0x40, ts.encode("ascii"))
            body += _item(0x20, struct.pack(">BBBB", pcid, 0, 0, 0) + sub)
        user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPL_CLASS_UID)
        body += _item(0x50, user)
        self._send_pdu(0x01, body)
        pdu_type, data = self._read_pdu()
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

    def _send_pdu(self, pdu_type, body):
        self.sock.sendall(struct.pack(">BBI", pdu_type, 0, len(body)) + body)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Aborted("connection closed by peer")
            buf += chunk
        return buf

    def _read_pdu(self):
        pdu_type, _, length = struct.unpack(">BBI", self._recv_exact(6))
        return pdu_type, self._recv_exact(length)

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
            self._send_pdu(0x04, pdv)

    def _read_command(self):
        command = b""
        while True:
            pdu_type, data = self._read_pdu()
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
        self._send_pdu(0x05, b"\0" * 4)
        try:
            pdu_type, _ = self._read_pdu()
        finally:
            self.sock.close()
        return pdu_type == 0x06

    def abort(self):
        try:
            self._send_pdu(0x07, b"\0" * 4)
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
