// Shared by the Node clients: the gateway's contract loaded straight from protos/ (no
// generated code), Structs and Timestamps to and from plain JSON, and the decoding of Saga's
// errors (google.rpc.Status → ErrorInfo).
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

const definition = protoLoader.loadSync(
  ["saga/gateway/v1/execution.proto", "saga/gateway/v1/sessions.proto"],
  LOAD_OPTIONS,
);
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

/** A google.protobuf.Value as proto-loader decodes it ({kind, stringValue, …}) as plain JSON. */
function plainValue(value) {
  switch (value.kind) {
    case "structValue": return plain(value.structValue);
    case "listValue": return (value.listValue.values || []).map(plainValue);
    case "nullValue": return null;
    default: return value[value.kind];  // numberValue, stringValue, boolValue
  }
}

/** A google.protobuf.Struct as a plain object (the inverse of structOf); {} when unset. */
function plain(struct) {
  const out = {};
  for (const [name, value] of Object.entries((struct && struct.fields) || {})) {
    out[name] = plainValue(value);
  }
  return out;
}

/** A google.protobuf.Timestamp as ISO 8601 text ("" when unset). */
function isoTime(timestamp) {
  if (!timestamp) return "";
  const ms = Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
  return new Date(ms).toISOString();
}

/** Print a failed call as one JSON line (code, details, and its ErrorInfo) and exit 1. */
function printError(err) {
  console.log(JSON.stringify({ error: grpc.status[err.code], details: err.details, ...errorInfo(err) }));
  process.exitCode = 1;
}

/** A client of the gateway's `service` (ExecutionService, SessionService) for SAGA_GATEWAY,
 * and the metadata carrying SAGA_API_KEY. */
function connect(service = "ExecutionService") {
  const key = process.env.SAGA_API_KEY;
  if (!key) {
    console.error("SAGA_API_KEY is required");
    process.exit(2);
  }
  const target = process.env.SAGA_GATEWAY || "127.0.0.1:50051";
  const client = new saga.gateway.v1[service](target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return { client, metadata };
}

/** Print each event of `call` as a JSON line (ms since `started`); errors as one line, exit 1.
 * `stopAfter` > 0 cancels the call after that many events, as a client that goes away. */
function printEvents(call, client, started, stopAfter = 0) {
  let seen = 0;
  call.on("data", (event) => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(JSON.stringify({ ms, sequence: event.sequence, event: event.event, [event.event]: event[event.event] }));
    seen += 1;
    if (stopAfter > 0 && seen === stopAfter) {
      call.cancel();
    }
  });
  call.on("error", (err) => {
    if (err.code === grpc.status.CANCELLED && stopAfter > 0 && seen >= stopAfter) {
      client.close();  // we went away on purpose
      return;
    }
    printError(err);
    client.close();
  });
  call.on("end", () => client.close());
}

module.exports = { connect, isoTime, plain, printError, printEvents, structOf };
