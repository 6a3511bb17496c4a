// Stock @grpc/grpc-js-xds client for the mesh interop tests.
//
// Calls one method on a target (usually xds:///host:port, configured only
// by GRPC_XDS_BOOTSTRAP) COUNT times, one call at a time, and prints a JSON
// report: OK calls per backend (the reply body is the backend's name),
// calls per status code, latencies, and for --key-header runs the backends
// each key value reached. Raw Buffers, so no protobuf codegen is involved.
'use strict';

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');

xds.register();

function parseArgs(argv) {
  const a = { count: 1, method: '/echo.Echo/Hello', header: [], keys: 1, deadline: 5, warmupDeadline: 20 };
  for (let i = 0; i < argv.length; i++) {
    const next = () => argv[++i];
    switch (argv[i]) {
      case '--target': a.target = next(); break;
      case '--count': a.count = Number(next()); break;
      case '--method': a.method = next(); break;
      case '--header': a.header.push(next()); break;
      case '--key-header': a.keyHeader = next(); break;
      case '--keys': a.keys = Number(next()); break;
      case '--deadline': a.deadline = Number(next()); break;
      case '--warmup-deadline': a.warmupDeadline = Number(next()); break;
      // xDS channel credentials (mTLS from the cluster config), plaintext fallback.
      case '--xds-creds': a.xdsCreds = true; break;
      case '--interval-ms': a.intervalMs = Number(next()); break;
      // Also report every call's backend (or status) in order.
      case '--sequence': a.sequence = true; break;
      // JSON file: a list of {method, headers: {name: value}} calls made
      // once each, in order, after the warmup; their codes are "plan".
      case '--plan': a.plan = next(); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!a.target) throw new Error('--target is required');
  return a;
}

const codeNames = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

function call(client, args, headers, seconds, waitForReady, method) {
  const md = new grpc.Metadata();
  for (const [k, v] of headers) md.add(k, v);
  const deadline = new Date(Date.now() + seconds * 1000);
  return new Promise((resolve) => {
    client.makeUnaryRequest(method || args.method, (b) => b, (b) => b, Buffer.from('hello'), md,
      { deadline, waitForReady }, (err, reply) => {
        if (err) resolve({ code: codeNames[err.code] || String(err.code), details: err.details });
        else resolve({ code: 'OK', name: reply.toString() });
      });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const base = args.header.map((h) => { const i = h.indexOf('='); return [h.slice(0, i), h.slice(i + 1)]; });
  const insecure = grpc.credentials.createInsecure();
  const creds = args.xdsCreds ? new xds.XdsChannelCredentials(insecure) : insecure;
  const client = new grpc.Client(args.target, creds);
  // One call that waits for xDS resolution and connections; not counted.
  await call(client, args, base, args.warmupDeadline, true);
  const codes = {}, backends = {}, byKey = {}, errors = {}, lat = [], seq = [];
  for (let i = 0; i < args.count; i++) {
    const headers = base.slice();
    let key = null;
    if (args.keyHeader) { key = `key-${i % args.keys}`; headers.push([args.keyHeader, key]); }
    const start = process.hrtime.bigint();
    const r = await call(client, args, headers, args.deadline, false);
    lat.push(Number(process.hrtime.bigint() - start) / 1e6);
    codes[r.code] = (codes[r.code] || 0) + 1;
    seq.push(r.name !== undefined ? r.name : r.code);
    if (args.intervalMs) await new Promise((res) => setTimeout(res, args.intervalMs));
    if (r.code !== 'OK' && !(r.code in errors)) errors[r.code] = r.details;
    if (r.name !== undefined) {
      backends[r.name] = (backends[r.name] || 0) + 1;
      if (key !== null) { byKey[key] = byKey[key] || {}; byKey[key][r.name] = (byKey[key][r.name] || 0) + 1; }
    }
  }
  const planCodes = [];
  if (args.plan) {
    const plan = JSON.parse(require('fs').readFileSync(args.plan, 'utf8'));
    for (const c of plan) {
      const r = await call(client, args, Object.entries(c.headers || {}), args.deadline, false, c.method);
      planCodes.push(r.code);
      if (r.code !== 'OK' && !(r.code in errors)) errors[r.code] = r.details;
    }
  }
  client.close();
  lat.sort((x, y) => x - y);
  const report = {
    codes, backends, by_key: byKey, errors,
    latency_ms: lat.length ? { min: lat[0], p50: lat[Math.floor(lat.length / 2)], max: lat[lat.length - 1] } : {},
  };
  if (args.sequence) report.sequence = seq;
  if (args.plan) report.plan = planCodes;
  process.stdout.write(JSON.stringify(report) + '\n');
  // xDS watches keep the event loop alive; the report is out, so leave.
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
