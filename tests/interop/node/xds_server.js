// Stock @grpc/grpc-js-xds server (gRFC A36) for the mesh interop tests.
//
// Serves the methods --methods names (default echo.Echo's Hello and
// Forbidden; raw Buffers, replying with --name) on
// 127.0.0.1:--port as an XdsServer with xDS credentials falling back to
// plaintext, so its listener and RBAC filters come from the control plane
// named in GRPC_XDS_BOOTSTRAP. Prints READY once bound (the server only
// accepts calls after it has received its listener).
'use strict';

// grpc-js-xds 1.14 still gates RBAC behind this flag; it is read at load.
process.env.GRPC_XDS_EXPERIMENTAL_RBAC = 'true';

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');

// Registers the HTTP filters (router, RBAC) the server's listener uses.
xds.register();

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = arg('--port');
const name = arg('--name', 'xds-server');
const methods = arg('--methods', '/echo.Echo/Hello,/echo.Echo/Forbidden').split(',');
if (!port) throw new Error('--port is required');

const raw = (b) => b;
const method = (path) => ({
  path, requestStream: false, responseStream: false,
  requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw,
});
const reply = (call, callback) => callback(null, Buffer.from(name));

const server = new xds.XdsServer();
server.addService(
  Object.fromEntries(methods.map((p) => [p, method(p)])),
  Object.fromEntries(methods.map((p) => [p, reply])),
);
server.bindAsync(`127.0.0.1:${port}`, new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()), (err) => {
  if (err) { console.error(err); process.exit(1); }
  process.stdout.write('READY\n');
});
