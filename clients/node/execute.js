#!/usr/bin/env node
// Saga from Node.js: stream an Execute with @grpc/grpc-js + @grpc/proto-loader, straight from
// protos/ (no generated code). Prints one JSON line per event, with the milliseconds since the
// call started, so a script (or a test) can see tokens arrive as they are produced.
//
//   SAGA_API_KEY=saga_ak_... node clients/node/execute.js chat prompt="Hello"
//   ... node clients/node/execute.js --detach --stop-after 4 chat prompt="Hello"
//   ... node clients/node/execute.js --session ses_... chat prompt="And then?"
//
// --detach sets options.detach_on_disconnect; --stop-after N cancels the call after N events
// (a client that goes away: resume with watch.js); --session ID runs in one of your sessions
// (sessions.js), which gains a stage once the run completes and whose earlier turns `chat`
// sees as its history. Environment: SAGA_GATEWAY (default
// 127.0.0.1:50051), SAGA_API_KEY (required). Errors print code, reason and domain (decoded
// from google.rpc.Status) and exit 1.
"use strict";

const { connect, printEvents, structOf } = require("./saga.js");

function main() {
  const args = process.argv.slice(2);
  let detach = false;
  let stopAfter = 0;
  let sessionId = "";
  while (args[0] && args[0].startsWith("--")) {
    const flag = args.shift();
    if (flag === "--detach") detach = true;
    else if (flag === "--stop-after") stopAfter = Number(args.shift());
    else if (flag === "--session") sessionId = args.shift() || "";
    else {
      console.error(`unknown flag ${flag}`);
      process.exit(2);
    }
  }
  const [pattern, ...inputs] = args;
  if (!pattern) {
    console.error(
      "usage: SAGA_API_KEY=... node execute.js [--detach] [--stop-after N] [--session ID] PATTERN [NAME=VALUE ...]",
    );
    process.exit(2);
  }
  const { client, metadata } = connect();
  const started = process.hrtime.bigint();
  const call = client.Execute(
    {
      pattern_id: pattern,
      inputs: structOf(inputs),
      session_id: sessionId,
      options: { detach_on_disconnect: detach },
    },
    metadata,
    { deadline: Date.now() + 120_000 },
  );
  printEvents(call, client, started, stopAfter);
}

main();
