// The mimi-ds command line as a child process (from source, through tsx's
// loader in the node process itself): exit code and output, never throwing.
import { spawn } from "node:child_process";
import { cliMain } from "./process.js";

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(
  args: readonly string[],
  options: { readonly env?: NodeJS.ProcessEnv; readonly uid?: number; readonly gid?: number; readonly timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", cliMain, ...args], {
      cwd: process.cwd(),
      env: { ...process.env, ...options.env },
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The single line a failed command printed on stderr (and nothing else: no stack trace). */
export function oneLine(r: CliResult): string {
  const text = r.stderr.trimEnd();
  if (text.includes("\n")) throw new Error(`expected one line on stderr, got:\n${r.stderr}`);
  if (!text.startsWith("mimi-ds: ")) throw new Error(`expected "mimi-ds: ..." on stderr, got:\n${r.stderr}`);
  return text;
}
