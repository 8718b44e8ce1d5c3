// `mimi-ds serve` as a real child process (run from source through tsx's
// loader in the node process itself, not the tsx wrapper, so that a SIGKILL
// hits the server and not a parent that would leave it running): the port
// comes from its "listening" log line.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

const root = process.cwd();
export const tsxBin = join(root, "node_modules", ".bin", "tsx");
export const cliMain = join(root, "src", "cli", "main.ts");

export interface ServeProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly port: number;
  readonly url: string;
  readonly lines: Record<string, unknown>[];
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (a crash) and wait for the exit. */
  crash(): Promise<void>;
}

export interface ServeOptions {
  readonly domain: string;
  readonly dataDir: string;
  /** Directory made by dev-certs: ca.pem and <domain>/{cert,key}.pem. */
  readonly certsDir: string;
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Who may register: "open" (default: the development mode, first use binds),
   * or the provider's issuer public key file (--registration-key).
   */
  readonly registration?: "open" | { readonly keyFile: string };
}

export async function spawnServe(o: ServeOptions): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      cliMain,
      "serve",
      // The domain may come from the environment instead (MIMI_DS_DOMAIN), as in the CLI test.
      ...(o.env?.MIMI_DS_DOMAIN === undefined ? ["--domain", o.domain] : []),
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      o.dataDir,
      "--tls-cert",
      join(o.certsDir, o.domain, "cert.pem"),
      "--tls-key",
      join(o.certsDir, o.domain, "key.pem"),
      "--tls-ca",
      join(o.certsDir, "ca.pem"),
      ...(o.registration === undefined || o.registration === "open" ? ["--open-registration"] : ["--registration-key", o.registration.keyFile]),
      ...(o.args ?? []),
    ],
    { cwd: root, env: { ...process.env, ...o.env } },
  );
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const lines: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      lines.push(entry);
      if (entry.msg === "listening") resolve(entry.port as number);
    });
    void exit.then(() => reject(new Error(`serve exited early: ${stderr}`)));
  });
  return {
    child,
    port,
    url: `https://localhost:${port}`,
    lines,
    exit,
    async stop() {
      child.kill("SIGTERM");
      return exit;
    },
    async crash() {
      child.kill("SIGKILL");
      await exit;
    },
  };
}
