import { describe, expect, test } from "vitest";
import { daily, day, short, usd, when } from "../src/format";

describe("format", () => {
  test("usd writes micro-dollars as dollars with four decimals", () => {
    expect(usd("1500000")).toBe("$1.5000");
    expect(usd(123)).toBe("$0.0001");
    expect(usd(0)).toBe("$0.0000");
  });

  test("when writes a UTC time to the second, a dash when there is none", () => {
    expect(when("2026-12-03T17:40:32.123456Z")).toBe("2026-12-03 17:40:32");
    expect(when("")).toBe("—");
    expect(when(undefined)).toBe("—");
  });

  test("short drops an enum's type prefix only", () => {
    expect(short("CIRCUIT_STATE_HALF_OPEN")).toBe("HALF_OPEN");
    expect(short("EXECUTION_STATUS_FAILED")).toBe("FAILED");
    expect(short("PROVIDER_UNAVAILABLE")).toBe("PROVIDER_UNAVAILABLE");
  });

  test("day counts back in UTC days, across a month's end", () => {
    const now = new Date("2026-03-01T00:30:00Z");
    expect(day(0, now)).toBe("2026-03-01");
    expect(day(1, now)).toBe("2026-02-28");
    expect(day(29, now)).toBe("2026-01-31");
  });

  test("daily has one point per day of the range, zero where nothing was used", () => {
    const rows = [
      { day: "2026-02-27", n: 2 },
      { day: "2026-03-01", n: 5 },
      { day: "2026-03-01", n: 1 }, // two rows of one day add up
      { day: "2026-03-09", n: 7 }, // outside the range
    ];
    expect(daily(rows, "2026-02-27", "2026-03-02", (r) => r.n)).toEqual([
      ["2026-02-27", 2],
      ["2026-02-28", 0],
      ["2026-03-01", 6],
      ["2026-03-02", 0],
    ]);
    expect(daily([], "2026-01-01", "2026-01-30", () => 1)).toHaveLength(30);
  });
});
