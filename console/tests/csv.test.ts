import { expect, test } from "vitest";
import { csv } from "../src/csv";

test("csv quotes a field with a comma, a quote or a line break, and ends records with CRLF", () => {
  expect(csv([["user", "Calls"], ["usr_1", "3"]])).toBe("user,Calls\r\nusr_1,3\r\n");
  expect(csv([["a,b", 'say "hi"', "two\nlines", "cr\r"]])).toBe('"a,b","say ""hi""","two\nlines","cr\r"\r\n');
  expect(csv([])).toBe("");
});
