#!/usr/bin/env node
// Resume a run from Node.js: WatchExecution replays the run's events after a sequence, then
// follows it live to its end. Same output as execute.js (one JSON line per event; a durable
// run that moved to another runtime replica has a `run_moved` line, after which the steps it
// names in restarted_step_ids start again). A watch cut by UNAVAILABLE (the replica it read
// from stopped) watches again after the last sequence printed, so the lines stay gapless.
//
//   SAGA_API_KEY=saga_ak_... node clients/node/watch.js EXECUTION_ID [AFTER_SEQUENCE]
"use strict";

const grpc = require("@grpc/grpc-js");
const { connect, printError } = require("./saga.js");

const RESUME_ATTEMPTS = 10;

function main() {
  const [executionId, after = "0"] = process.argv.slice(2);
  if (!executionId) {
    console.error("usage: SAGA_API_KEY=... node watch.js EXECUTION_ID [AFTER_SEQUENCE]");
    process.exit(2);
  }
  const { client, metadata } = connect();
  const started = process.hrtime.bigint();
  let last = after;
  let failures = 0;
  let again = false;  // a new watch is scheduled: this call's end does not close the client
  const watch = () => {
    again = false;
    const call = client.WatchExecution(
      { execution_id: executionId, after_sequence: last },
      metadata,
      { deadline: Date.now() + 120_000 },
    );
    call.on("data", (event) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      console.log(JSON.stringify({ ms, sequence: event.sequence, event: event.event, [event.event]: event[event.event] }));
      last = event.sequence;
      failures = 0;
    });
    call.on("error", (err) => {
      failures += 1;
      if (err.code === grpc.status.UNAVAILABLE && failures <= RESUME_ATTEMPTS) {
        again = true;
        setTimeout(watch, Math.min(2000, 200 * 2 ** (failures - 1)));
        return;
      }
      printError(err);
      client.close();
    });
    call.on("end", () => {
      if (!again) client.close();
    });
  };
  watch();
}

main();
