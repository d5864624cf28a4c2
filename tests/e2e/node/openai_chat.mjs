// The official `openai` npm package against Saga's OpenAI-compatible API. Prints one JSON
// object with what each call gave: a completion that falls back (the test makes the group's
// first provider fail once), a stream with usage, a tool round trip (the call streamed and
// accumulated by the SDK's `chat.completions.stream` helper, the test scripts the model's
// call; then the tool's result sent back), and the refusals as the SDK's classes.
// SAGA_OPENAI_BASE_URL, SAGA_KEY and SAGA_BUDGETED_KEY (a user whose budget is spent) say
// where and as whom.
import OpenAI from "openai";

const baseURL = process.env.SAGA_OPENAI_BASE_URL;
const sdk = (apiKey) => new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const client = sdk(process.env.SAGA_KEY);
const hi = [{ role: "user", content: "hello from node" }];

async function refusal(kind, call) {
  try {
    await call();
  } catch (error) {
    if (!(error instanceof OpenAI[kind])) throw error;
    return { status: error.status, code: error.code, param: error.param ?? null };
  }
  throw new Error(`expected ${kind}`);
}

const fallback = await client.chat.completions.create({ model: "team/chat", messages: hi });

const stream = await client.chat.completions.create({
  model: "llama-a",
  messages: hi,
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let finish_reason = null;
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length > 0) {
    text += chunk.choices[0].delta.content ?? "";
    finish_reason = chunk.choices[0].finish_reason ?? finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const called = await client.chat.completions
  .stream({ model: "llama-a", messages: hi, tools: [weather] })
  .finalChatCompletion();
const [call] = called.choices[0].message.tool_calls;
const answered = await client.chat.completions.create({
  model: "llama-a",
  messages: [
    ...hi,
    called.choices[0].message,
    { role: "tool", tool_call_id: call.id, content: "12 degrees" },
  ],
  tools: [weather],
});

const out = {
  tool: {
    finish_reason: called.choices[0].finish_reason,
    name: call.function.name,
    arguments: JSON.parse(call.function.arguments),
    answer: answered.choices[0].message.content,
  },
  fallback: { model: fallback.model, text: fallback.choices[0].message.content },
  stream: { text, finish_reason, usage },
  bad_key: await refusal("AuthenticationError", () =>
    sdk("sk-not-a-saga-key").chat.completions.create({ model: "llama-a", messages: hi }),
  ),
  budget: await refusal("RateLimitError", () =>
    sdk(process.env.SAGA_BUDGETED_KEY).chat.completions.create({ model: "llama-a", messages: hi }),
  ),
  not_found: await refusal("NotFoundError", () =>
    client.chat.completions.create({ model: "no-such-model", messages: hi }),
  ),
  unsupported: await refusal("BadRequestError", () =>
    client.chat.completions.create({ model: "llama-a", messages: hi, n: 2 }),
  ),
};
process.stdout.write(JSON.stringify(out));
