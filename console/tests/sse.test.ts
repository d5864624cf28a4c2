import { describe, expect, test } from "vitest";
import { EventSplitter, parseBlock } from "../src/sse";

describe("parseBlock", () => {
  test("reads the event name, its id and its JSON data", () => {
    expect(parseBlock('event: token\nid: 3\ndata: {"token": {"text": "hi"}}')).toEqual({
      event: "token",
      id: "3",
      data: { token: { text: "hi" } },
    });
  });

  test("joins data lines with a newline, keeps a value without the optional space", () => {
    expect(parseBlock('data: {"a":\ndata:1}')).toEqual({ event: "message", id: "", data: { a: 1 } });
    expect(parseBlock("event:completed\ndata:{}")?.event).toBe("completed");
  });

  test("a heartbeat or a block without data is no event", () => {
    expect(parseBlock(": keep-alive")).toBeNull();
    expect(parseBlock("event: token")).toBeNull();
  });
});

describe("EventSplitter", () => {
  test("an event cut across chunks is reported once its block ends", () => {
    const s = new EventSplitter();
    expect(s.push('event: token\ndata: {"t"')).toEqual([]);
    expect(s.push(': 1}\n')).toEqual([]);
    expect(s.push('\nevent: completed\ndata: {}\n\n: ping\n\n')).toEqual([
      { event: "token", id: "", data: { t: 1 } },
      { event: "completed", id: "", data: {} },
    ]);
  });

  test("CRLF line ends, even split between chunks, read as LF", () => {
    const s = new EventSplitter();
    expect(s.push("data: 1\r")).toEqual([]);
    expect(s.push("\n\r")).toEqual([]);
    expect(s.push("\ndata: 2\r\n\r\n")).toEqual([
      { event: "message", id: "", data: 1 },
      { event: "message", id: "", data: 2 },
    ]);
  });
});
