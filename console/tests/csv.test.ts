import { expect, test } from "vitest";
import { csv } from "../src/csv";

test("csv quotes a field with a comma, a quote or a line break, and ends records with CRLF", () => {
  expect(csv([["user", "Calls"], ["usr_1", "3"]])).toBe("user,Calls\r\nusr_1,3\r\n");
  expect(csv([["a,b", 'say "hi"', "two\nlines", "cr\r"]])).toBe('"a,b","say ""hi""","two\nlines","cr\r"\r\n');
  expect(csv([])).toBe("");
});

test("a text cell that a spreadsheet would read as a formula is prefixed with a quote", () => {
  for (const lead of ["=", "+", "-", "@", "\t", "\r"]) {
    expect(csv([[`${lead}1+1`]])).toBe(/[\r]/.test(lead) ? `"'${lead}1+1"\r\n` : `'${lead}1+1\r\n`);
  }
  // Still quoted by RFC 4180 when it needs to be, the quote inside the quotes.
  expect(csv([['=HYPERLINK("http://x","y")']])).toBe(`"'=HYPERLINK(""http://x"",""y"")"\r\n`);
  // Anywhere but the start, and ordinary text, is left as it is.
  expect(csv([["a=b", "usr_1", "gpt-4o"]])).toBe("a=b,usr_1,gpt-4o\r\n");
});

test("numbers the console writes stay numbers, a negative one too", () => {
  expect(csv([[-0.5, 3, "-0.5"]])).toBe("-0.5,3,'-0.5\r\n");
});
