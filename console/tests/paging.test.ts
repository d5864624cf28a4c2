import { expect, test } from "vitest";
import { Pages } from "../src/paging";

test("the first page asks without a token; next sends the token the page was answered with", () => {
  const pages = new Pages();
  expect(pages.params({ status: "x", page_size: 50 })).toEqual({ status: "x", page_size: 50 });
  expect([pages.hasPrevious, pages.hasNext, pages.number]).toEqual([false, false, 1]);
  pages.answered("tok-2");
  expect(pages.hasNext).toBe(true);
  pages.next();
  expect(pages.params({ status: "x" })).toEqual({ status: "x", page_token: "tok-2" });
  expect([pages.hasPrevious, pages.hasNext, pages.number]).toEqual([true, false, 2]);
});

test("previous goes back through the tokens seen; the last page has no next", () => {
  const pages = new Pages();
  pages.answered("tok-2");
  pages.next();
  pages.answered("tok-3");
  pages.next();
  pages.answered("");
  expect([pages.hasNext, pages.number]).toEqual([false, 3]);
  pages.next(); // nothing after the last page
  expect(pages.current).toBe("tok-3");
  pages.previous();
  expect([pages.current, pages.number]).toEqual(["tok-2", 2]);
  pages.previous();
  expect([pages.current, pages.hasPrevious]).toEqual(["", false]);
  pages.previous(); // nothing before the first
  expect(pages.number).toBe(1);
});

test("reset goes back to the first page, forgetting the old filters' tokens", () => {
  const pages = new Pages();
  pages.answered("tok-2");
  pages.next();
  pages.reset();
  expect(pages.params({})).toEqual({});
  expect([pages.hasPrevious, pages.hasNext]).toEqual([false, false]);
});
