// The Usage page's CSV download (RFC 4180: a field with a comma, a quote or a line break is
// quoted, its quotes doubled; CRLF ends each record).
//
// A text cell that begins with = + - @, a tab or a carriage return would be read as a
// formula by a spreadsheet (CSV injection: a user id or a model name is text someone else
// chose). Such a cell is prefixed with a single quote, as OWASP advises. The exception is a
// number the console wrote itself (a cost of -0.5, say): it cannot hold a formula, and
// prefixing it would make it text in the spreadsheet.

export type Cell = string | number;

export function csv(rows: Cell[][]): string {
  return rows.map((r) => r.map(field).join(",") + "\r\n").join("");
}

const FORMULA_START = /^[=+\-@\t\r]/;

function field(cell: Cell): string {
  const value = typeof cell === "number" ? String(cell) : FORMULA_START.test(cell) ? `'${cell}` : cell;
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}
