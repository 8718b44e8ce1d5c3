// A port for a serve process that must know its port before it starts (a
// peers file names it, or the process restarts on it). Asking the kernel for
// one (listen on 0) and closing it hands out an ephemeral port, which any
// other test's outgoing connection or `--listen ...:0` may take before the
// serve process binds it ("the address is already in use"). So these come
// from below the kernel's ephemeral range, where nothing is handed out
// unasked, each checked free and never given twice by this process.
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 12_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

const high = ephemeralLow() - 1;
const low = high - 10_000;
const given = new Set<number>();

const bindable = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });

/** A free loopback port outside the ephemeral range, for a server that binds it soon after. */
export async function reservedPort(): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (given.has(port)) continue;
    if (await bindable(port)) {
      given.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${low}-${high}`);
}
