"""Stock grpcio xDS server (gRFC A36) for the mesh interop tests.

Serves the methods --methods names (default echo.Echo's Hello and
Forbidden; raw bytes, replying with --name) on
127.0.0.1:--port with xds=True and xDS server credentials falling back to
plaintext, so its listener, filter chains and RBAC filters come from the
control plane named in GRPC_XDS_BOOTSTRAP. Prints READY once started (the
server only accepts calls after it has received its listener).
"""

import argparse
import sys
from concurrent import futures

import grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="xds-server")
    p.add_argument("--methods", default="/echo.Echo/Hello,/echo.Echo/Forbidden",
                   help="comma-separated full method names to serve")
    args = p.parse_args()

    def reply(request, context):
        return args.name.encode()

    handler = grpc.unary_unary_rpc_method_handler(reply)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
    services = {}
    for full in args.methods.split(","):
        service, method = full.strip("/").split("/", 1)
        services.setdefault(service, {})[method] = handler
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(s, m) for s, m in services.items()))
    creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port("127.0.0.1:%d" % args.port, creds)
    server.start()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
