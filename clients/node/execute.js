#!/usr/bin/env node
// Saga from Node.js: stream an Execute with @grpc/grpc-js + @grpc/proto-loader, straight from
// protos/ (no generated code). Prints one JSON line per event, with the milliseconds since the
// call started, so a script (or a test) can see tokens arrive as they are produced.
//
//   SAGA_API_KEY=saga_ak_... node clients/node/execute.js chat prompt="Hello"
//
// Environment: SAGA_GATEWAY (default 127.0.0.1:50051), SAGA_API_KEY (required).
// Errors print code, reason and domain (decoded from google.rpc.Status) and exit 1.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const LOAD_OPTIONS = {
  includeDirs: [PROTOS],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

const protobuf = require("protobufjs");

const definition = protoLoader.loadSync("saga/gateway/v1/execution.proto", LOAD_OPTIONS);
const saga = grpc.loadPackageDefinition(definition).saga;

// google.rpc.Status and ErrorInfo, declared inline: only google/protobuf/* ships with
// proto-loader, and these two messages are all a client needs to read a Saga error.
const errorTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
          },
        },
      },
    },
  },
});
const Status = errorTypes.lookupType("google.rpc.Status");
const ErrorInfo = errorTypes.lookupType("google.rpc.ErrorInfo");

/** The ErrorInfo {reason, domain, metadata} of a failed call, or {} when it carries none. */
function errorInfo(err) {
  const raw = err.metadata && err.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return {};
  const status = Status.decode(raw);
  for (const detail of status.details) {
    if (detail.type_url.endsWith("/google.rpc.ErrorInfo")) {
      return ErrorInfo.toObject(ErrorInfo.decode(detail.value));
    }
  }
  return {};
}

/** NAME=VALUE arguments as a google.protobuf.Struct. */
function structOf(pairs) {
  const fields = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new Error(`inputs are NAME=VALUE, got ${pair}`);
    fields[pair.slice(0, at)] = { stringValue: pair.slice(at + 1) };  // protobufjs: camelCase in Value
  }
  return { fields };
}

function main() {
  const [pattern, ...inputs] = process.argv.slice(2);
  const key = process.env.SAGA_API_KEY;
  if (!pattern || !key) {
    console.error("usage: SAGA_API_KEY=... node execute.js PATTERN [NAME=VALUE ...]");
    process.exit(2);
  }
  const target = process.env.SAGA_GATEWAY || "127.0.0.1:50051";
  const client = new saga.gateway.v1.ExecutionService(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  const started = process.hrtime.bigint();
  const call = client.Execute(
    { pattern_id: pattern, inputs: structOf(inputs) },
    metadata,
    { deadline: Date.now() + 120_000 },
  );
  call.on("data", (event) => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(JSON.stringify({ ms, sequence: event.sequence, event: event.event, [event.event]: event[event.event] }));
  });
  call.on("error", (err) => {
    const info = errorInfo(err);
    console.log(JSON.stringify({ error: grpc.status[err.code], details: err.details, ...info }));
    client.close();
    process.exitCode = 1;
  });
  call.on("end", () => client.close());
}

main();
