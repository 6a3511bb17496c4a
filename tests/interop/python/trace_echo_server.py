"""Stock grpcio server (no xDS) that answers every call on /echo.Echo/Hello
with what a traced hop would pass on: the `traceparent`, `x-b3-spanid` and
`x-request-id` metadata it received, as `key=value` lines. It stands for a
stock gRPC service one hop behind an SDK client, to check which context
reaches it. Prints READY once serving on 127.0.0.1:--port.
"""

import argparse
import sys
from concurrent import futures

import grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()

    def reply(request, context):
        md = dict(context.invocation_metadata())
        keys = ("traceparent", "x-b3-spanid", "x-request-id")
        return "\n".join("%s=%s" % (k, md.get(k, "-")) for k in keys).encode()

    handler = grpc.unary_unary_rpc_method_handler(reply)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("echo.Echo", {"Hello": handler}),))
    server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
