// The Usage page's CSV download (RFC 4180: a field with a comma, a quote or a line break is
// quoted, its quotes doubled; CRLF ends each record).

export function csv(rows: string[][]): string {
  return rows.map((r) => r.map(field).join(",") + "\r\n").join("");
}

function field(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}
