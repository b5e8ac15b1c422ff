"""Log lines as nginx writes them, made by hand for tests: ``make_line`` and the
escaping nginx applies (``escape=json``).

Kept out of the test modules so that fixtures importing them do not import a test
module (whose Hypothesis tests would be decorated before the suite's profile loads).
"""

from __future__ import annotations

RID = "0123456789abcdef0123456789abcdef"


def nginx_escape_json(value: bytes) -> bytes:
    """What nginx's ``escape=json`` does to a variable: ``"`` and ``\\`` escaped,
    bytes below 0x20 as ``\\n``-style or ``\\u00XX`` escapes, everything else raw.
    (Checked against the real nginx in test_e2e_contract.py.)"""
    short = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}
    out = bytearray()
    for byte in value:
        if byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte < 0x20:
            out += short.get(byte, b"\\u%04X" % byte)
        else:
            out.append(byte)
    return bytes(out)


def make_line(body: bytes = b"", **fields: str) -> bytes:
    values = {
        "t": "1795250368.589",
        "rt": "0.002",
        "id": RID,
        "project": "demo",
        "method": "POST",
        "uri": "/notes?x=1",
        "ctype": "text/plain",
        "clen": str(len(body)),
        "addr": "127.0.0.1",
        "ua": "curl/8",
        "status": "202",
        **fields,
    }
    e = {k: nginx_escape_json(v.encode()) for k, v in values.items()}
    return (
        b'{"v":1,"t":' + e["t"] + b',"rt":' + e["rt"] + b',"id":"' + e["id"] + b'","project":"'
        + e["project"] + b'","method":"' + e["method"] + b'","uri":"' + e["uri"] + b'","ctype":"'
        + e["ctype"] + b'","clen":"' + e["clen"] + b'","addr":"' + e["addr"] + b'","ua":"' + e["ua"]
        + b'","status":"' + e["status"] + b'","body":"' + nginx_escape_json(body) + b'"}'
    )  # fmt: skip
