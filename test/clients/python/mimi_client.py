#!/usr/bin/env python3
"""A MIMI DS client in Python on code generated from proto/ (docs/clients.md).

It uses only the generated modules and grpcio: Ping, HubInfo (with the
ExternalSender decoded), Submit of a request_group_id DSRequest and of the
key_packages DSRequest of docs/clients.md (byte for byte), and DS errors read
from grpc-status-details-bin (google.rpc.Status -> DSErrorDetail -> DSResponse).
test/clients/python.test.ts runs it against a real `mimi-ds serve` over TLS and
checks what it prints (one JSON object).

usage: mimi_client.py --target localhost:8443 --ca ca.pem --gen DIR [--gen DIR2]
"""
import argparse
import json
import sys


def read_varint(b, i):
    """RFC 9420 2.1.2 variable-size length: 1, 2 or 4 bytes by the top two bits."""
    prefix = b[i] >> 6
    if prefix == 0:
        return b[i] & 0x3F, i + 1
    if prefix == 1:
        return ((b[i] & 0x3F) << 8) | b[i + 1], i + 2
    if prefix == 2:
        return int.from_bytes(bytes([b[i] & 0x3F]) + b[i + 1:i + 4], "big"), i + 4
    raise ValueError("invalid varint prefix 0b11")


def write_varint(n):
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 1 << 30:
        return (n | 0x80000000).to_bytes(4, "big")
    raise ValueError("too long")


def opaque_v(data):
    return write_varint(len(data)) + data


def read_opaque_v(b, i):
    n, i = read_varint(b, i)
    return b[i:i + n], i + n


DS_PROTOCOL_VERSION = (1).to_bytes(2, "big")
ANONYMOUS = b"\x00"  # DSAuthType anonymous(0)


def request_group_id():
    # DSRequest { version, DSRequestBody { request_group_id(8), struct {} }, DSAuthData { anonymous } }
    return DS_PROTOCOL_VERSION + b"\x08" + ANONYMOUS


def key_packages(client_ids, cipher_suites):
    """The worked example of docs/clients.md: key_packages(7), anonymous."""
    ids = b"".join(opaque_v(c.encode()) for c in client_ids)
    suites = b"".join(s.to_bytes(2, "big") for s in cipher_suites)
    return DS_PROTOCOL_VERSION + b"\x07" + opaque_v(ids) + opaque_v(suites) + ANONYMOUS


def external_commit_info(group_id):
    return DS_PROTOCOL_VERSION + b"\x0b" + opaque_v(group_id) + ANONYMOUS


RESPONSE_TYPES = {0: "ok", 1: "error", 2: "welcome_info", 3: "external_commit_info", 4: "key_packages", 5: "group_id"}


def decode_ds_response(b):
    version = int.from_bytes(b[0:2], "big")
    rtype = RESPONSE_TYPES.get(b[2], str(b[2]))
    out = {"version": version, "type": rtype}
    if rtype == "group_id":
        gid, _ = read_opaque_v(b, 3)
        out["group_id"] = gid.decode()
    elif rtype == "error":
        # DSError { uint16 code; opaque message<V>; optional<uint64> current_epoch; }
        code = int.from_bytes(b[3:5], "big")
        msg, i = read_opaque_v(b, 5)
        out["code"] = code
        out["message"] = msg.decode()
        if b[i] == 1:
            out["current_epoch"] = int.from_bytes(b[i + 1:i + 9], "big")
    return out


def decode_external_sender(b):
    """RFC 9420 ExternalSender { SignaturePublicKey signature_key; Credential credential; }."""
    key, i = read_opaque_v(b, 0)
    ctype = int.from_bytes(b[i:i + 2], "big")
    out = {"signature_key": key.hex(), "credential_type": ctype}
    if ctype == 1:  # basic
        identity, _ = read_opaque_v(b, i + 2)
        out["identity"] = identity.decode()
    return out


def ds_error_of(err, grpc, hub_pb2, status_pb2):
    """The DS error inside a failed Submit: grpc-status-details-bin holds a google.rpc.Status."""
    details = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if details is None:
        return {"rpc_code": err.code().name, "detail": None}
    status = status_pb2.Status.FromString(details)
    detail = hub_pb2.DSErrorDetail()
    found = [d for d in status.details if d.Is(hub_pb2.DSErrorDetail.DESCRIPTOR)]
    found[0].Unpack(detail)
    return {
        "rpc_code": err.code().name,
        "status_code": status.code,
        "type_url": found[0].type_url,
        "detail": decode_ds_response(detail.ds_response),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--gen", required=True, action="append", help="directory of generated modules (repeatable)")
    args = ap.parse_args()
    sys.path[0:0] = args.gen

    import grpc
    from google.rpc import status_pb2
    from mimi.ds.v1 import hub_pb2, hub_pb2_grpc

    with open(args.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    result = {}
    with grpc.secure_channel(args.target, creds) as channel:
        hub = hub_pb2_grpc.HubServiceStub(channel)
        result["ping"] = hub.Ping(hub_pb2.PingRequest(), timeout=30).domain

        info = hub.HubInfo(hub_pb2.HubInfoRequest(cipher_suite=1), timeout=30)
        result["hub_info"] = {
            "domain": info.domain,
            "protocol_versions": list(info.protocol_versions),
            "fanout_signature_key": info.fanout_signature_key.hex(),
            "external_sender": decode_external_sender(info.external_sender),
        }

        res = hub.Submit(hub_pb2.SubmitRequest(ds_request=request_group_id()), timeout=30)
        result["request_group_id"] = decode_ds_response(res.ds_response)

        errors = {}
        for name, ds_request in [
            ("garbage", b"\x00\x01\xee\xee"),
            ("unknown_group", external_commit_info(b"no-such-group@" + info.domain.encode())),
            ("key_packages", key_packages(["alice:1@" + info.domain], [1])),
        ]:
            try:
                res = hub.Submit(hub_pb2.SubmitRequest(ds_request=ds_request), timeout=30)
                errors[name] = {"answered": decode_ds_response(res.ds_response)}
            except grpc.RpcError as err:
                errors[name] = ds_error_of(err, grpc, hub_pb2, status_pb2)
        result["errors"] = errors
        result["key_packages_hex"] = key_packages(["alice:1@" + info.domain], [1]).hex()
    result["hub_pb2_file"] = hub_pb2.__file__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
