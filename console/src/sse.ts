// Server-Sent Events, parsed as the body arrives (the console reads streams with fetch(),
// since EventSource cannot send an Authorization header). Pure: Vitest checks it
// (console/tests/sse.test.ts).

export type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface StreamEvent {
  event: string;
  id: string;
  data: Json;
}

/** One event block (the lines between two blank lines); null for a heartbeat or a block
 * without data. Per the SSE spec a single space after the colon is dropped, lines without
 * one keep their value whole, and data lines join with "\n". */
export function parseBlock(block: string): StreamEvent | null {
  let event = "message";
  let id = "";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // heartbeat
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "id") id = value;
    else if (name === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, id, data: JSON.parse(data.join("\n")) };
}

/** Cuts a stream's text, chunk by chunk, into events: a block split across chunks waits
 * for its end, and CRLF or CR line ends read as LF. */
export class EventSplitter {
  private buffer = "";

  push(chunk: string): StreamEvent[] {
    let text = this.buffer + chunk;
    // A CR at the end may be the first half of a CRLF: it waits for the next chunk.
    const held = text.endsWith("\r") ? "\r" : "";
    text = text.slice(0, text.length - held.length).replace(/\r\n?/g, "\n");
    const events: StreamEvent[] = [];
    let cut: number;
    while ((cut = text.indexOf("\n\n")) >= 0) {
      const parsed = parseBlock(text.slice(0, cut));
      text = text.slice(cut + 2);
      if (parsed) events.push(parsed);
    }
    this.buffer = text + held;
    return events;
  }
}
