#!/usr/bin/env node
// Saga's sessions from Node.js: SessionService through the gateway (scope `sessions`), with
// @grpc/grpc-js + @grpc/proto-loader straight from protos/. Prints the reply as one JSON line
// (Structs as plain JSON, times as ISO 8601); run `execute.js --session ID` to add stages.
//
//   SAGA_API_KEY=saga_ak_... node clients/node/sessions.js create [--title T] [NAME=VALUE ...]
//   ... sessions.js list [--page-size N] [--page-token T]   yours, most recently updated first
//   ... sessions.js show ID                                 with its stages, oldest first
//   ... sessions.js delete ID                               it and its stages (runs stay)
//
// NAME=VALUE pairs of `create` are the session's metadata. Environment: SAGA_GATEWAY (default
// 127.0.0.1:50051), SAGA_API_KEY (required). Errors print code, reason and domain and exit 1;
// another user's session is NOT_FOUND SESSION_NOT_FOUND, like one that does not exist.
"use strict";

const { connect, isoTime, plain, printError, structOf } = require("./saga.js");

const USAGE = "usage: SAGA_API_KEY=... node sessions.js create [--title T] [NAME=VALUE ...] | "
  + "list [--page-size N] [--page-token T] | show ID | delete ID";

/** A Session message as plain JSON: its stages with their inputs and outputs. */
function sessionJson(session) {
  return {
    session_id: session.session_id,
    user_id: session.user_id,
    title: session.title,
    metadata: plain(session.metadata),
    created_at: isoTime(session.created_at),
    updated_at: isoTime(session.updated_at),
    stages: (session.stages || []).map((stage) => ({
      execution_id: stage.execution_id,
      pattern_id: stage.pattern_id,
      created_at: isoTime(stage.created_at),
      inputs: plain(stage.inputs),
      outputs: plain(stage.outputs),
    })),
  };
}

/** The flags (--name VALUE) before the positional arguments, and those arguments. */
function flags(args, allowed) {
  const given = {};
  const rest = [];
  while (args.length) {
    const arg = args.shift();
    if (!arg.startsWith("--")) {
      rest.push(arg);
      continue;
    }
    if (!allowed.includes(arg) || !args.length) {
      console.error(`${arg}: ${allowed.includes(arg) ? "needs a value" : "unknown flag"}\n${USAGE}`);
      process.exit(2);
    }
    given[arg] = args.shift();
  }
  return { given, rest };
}

/** The request of `command` and how to print its reply. */
function request(command, args) {
  if (command === "create") {
    const { given, rest } = flags(args, ["--title"]);
    let metadata;
    try {
      metadata = structOf(rest);
    } catch (err) {
      console.error(err.message);
      process.exit(2);
    }
    return ["CreateSession", { title: given["--title"] || "", metadata }, (r) => sessionJson(r.session)];
  }
  if (command === "list") {
    const { given, rest } = flags(args, ["--page-size", "--page-token"]);
    const size = Number(given["--page-size"] || 0);
    if (rest.length || !Number.isInteger(size) || size < 0) {
      console.error(USAGE);
      process.exit(2);
    }
    return [
      "ListSessions",
      { page_size: size, page_token: given["--page-token"] || "" },
      (r) => ({ sessions: r.sessions.map(sessionJson), next_page_token: r.next_page_token }),
    ];
  }
  if ((command === "show" || command === "delete") && args.length === 1) {
    const [sessionId] = args;
    if (command === "show") {
      return ["GetSession", { session_id: sessionId }, (r) => sessionJson(r.session)];
    }
    return ["DeleteSession", { session_id: sessionId }, () => ({ deleted: sessionId })];
  }
  console.error(USAGE);
  process.exit(2);
}

function main() {
  const [command, ...args] = process.argv.slice(2);
  const [method, message, shown] = request(command, args);
  const { client, metadata } = connect("SessionService");
  client[method](message, metadata, { deadline: Date.now() + 30_000 }, (err, reply) => {
    if (err) printError(err);
    else console.log(JSON.stringify(shown(reply)));
    client.close();
  });
}

main();
