"""Stock grpcio client for the mesh interop tests.

Calls one method on a target (usually xds:///host:port, configured only by
GRPC_XDS_BOOTSTRAP) COUNT times, one call at a time, and prints a JSON
report: OK calls per backend (the reply body is the backend's name), calls
per status code, latencies, and for --key-header runs the backends each key
value reached. Uses raw bytes, so no protobuf codegen is involved.
"""

import argparse
import json
import sys
import time

import grpc
import grpc.experimental


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--method", default="/echo.Echo/Hello")
    p.add_argument("--header", action="append", default=[],
                   help="name=value metadata sent on every call")
    p.add_argument("--key-header", help="header carrying key-<i mod keys>")
    p.add_argument("--keys", type=int, default=1)
    p.add_argument("--deadline", type=float, default=5.0,
                   help="per-call deadline in seconds")
    p.add_argument("--warmup-deadline", type=float, default=20.0)
    p.add_argument("--interval-ms", type=float, default=0.0,
                   help="pause between calls")
    p.add_argument("--sequence", action="store_true",
                   help="also report every call's backend (or status) in order")
    p.add_argument("--plan",
                   help="JSON file: a list of {method, headers: {name: value}} "
                        "calls made once each, in order, after the warmup; "
                        "their status codes are reported as \"plan\"")
    p.add_argument("--xds-creds", action="store_true",
                   help="xDS channel credentials (mTLS from the control "
                        "plane's cluster config), plaintext fallback")
    args = p.parse_args()

    base = [tuple(h.split("=", 1)) for h in args.header]
    codes, backends, by_key, lat, errors, seq = {}, {}, {}, [], {}, []
    if args.xds_creds:
        creds = grpc.xds_channel_credentials(
            grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(args.target, creds)
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        call = channel.unary_unary(
            args.method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        # One call that waits for xDS resolution and connections; its
        # outcome is not counted (a fault or timeout route fails it).
        try:
            call(b"warmup", metadata=base or None, timeout=args.warmup_deadline,
                 wait_for_ready=True)
        except grpc.RpcError:
            pass
        for i in range(args.count):
            md = list(base)
            key = None
            if args.key_header:
                key = "key-%d" % (i % args.keys)
                md.append((args.key_header, key))
            start = time.monotonic()
            try:
                reply = call(b"hello", metadata=md or None, timeout=args.deadline)
                code, name = "OK", reply.decode()
            except grpc.RpcError as e:
                code, name = e.code().name, None
                errors.setdefault(code, e.details())
            lat.append((time.monotonic() - start) * 1000.0)
            codes[code] = codes.get(code, 0) + 1
            seq.append(name if name is not None else code)
            if args.interval_ms:
                time.sleep(args.interval_ms / 1000.0)
            if name is not None:
                backends[name] = backends.get(name, 0) + 1
                if key is not None:
                    k = by_key.setdefault(key, {})
                    k[name] = k.get(name, 0) + 1
        plan_codes = []
        if args.plan:
            with open(args.plan) as f:
                plan = json.load(f)
            for c in plan:
                md = list(c.get("headers", {}).items())
                one = channel.unary_unary(
                    c["method"],
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                try:
                    one(b"hello", metadata=md or None, timeout=args.deadline)
                    plan_codes.append("OK")
                except grpc.RpcError as e:
                    plan_codes.append(e.code().name)
                    errors.setdefault(e.code().name, e.details())
    lat.sort()
    report = {
        "codes": codes,
        "backends": backends,
        "by_key": by_key,
        "errors": errors,
        "latency_ms": {
            "min": lat[0] if lat else None,
            "p50": lat[len(lat) // 2] if lat else None,
            "max": lat[-1] if lat else None,
        },
    }
    if args.sequence:
        report["sequence"] = seq
    if args.plan:
        report["plan"] = plan_codes
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
