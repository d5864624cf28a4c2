#!/usr/bin/env node
// Resume a run from Node.js: WatchExecution replays the run's events after a sequence, then
// follows it live to its end. Same output as execute.js (one JSON line per event).
//
//   SAGA_API_KEY=saga_ak_... node clients/node/watch.js EXECUTION_ID [AFTER_SEQUENCE]
"use strict";

const { connect, printEvents } = require("./saga.js");

function main() {
  const [executionId, after = "0"] = process.argv.slice(2);
  if (!executionId) {
    console.error("usage: SAGA_API_KEY=... node watch.js EXECUTION_ID [AFTER_SEQUENCE]");
    process.exit(2);
  }
  const { client, metadata } = connect();
  const started = process.hrtime.bigint();
  const call = client.WatchExecution(
    { execution_id: executionId, after_sequence: after },
    metadata,
    { deadline: Date.now() + 120_000 },
  );
  printEvents(call, client, started);
}

main();
