// The official `openai` npm package against Saga's OpenAI-compatible API: stream a
// completion with usage, then ask for a model that does not exist. Prints one JSON object.
// SAGA_OPENAI_BASE_URL and SAGA_KEY say where and as whom.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.SAGA_OPENAI_BASE_URL,
  apiKey: process.env.SAGA_KEY,
  maxRetries: 0,
});

const stream = await client.chat.completions.create({
  model: "llama-a",
  messages: [{ role: "user", content: "hello from node" }],
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let model = "";
let finish_reason = null;
let usage = null;
for await (const chunk of stream) {
  model = chunk.model;
  if (chunk.choices.length > 0) {
    text += chunk.choices[0].delta.content ?? "";
    finish_reason = chunk.choices[0].finish_reason ?? finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}

let not_found = null;
try {
  await client.chat.completions.create({
    model: "no-such-model",
    messages: [{ role: "user", content: "hi" }],
  });
} catch (error) {
  if (!(error instanceof OpenAI.NotFoundError)) throw error;
  not_found = { status: error.status, code: error.code };
}
process.stdout.write(JSON.stringify({ text, model, finish_reason, usage, not_found }));
