// Browsers: a page on another origin than the DS calls it with
// @connectrpc/connect-web over Connect (binary and JSON) and gRPC-Web, in
// Debian's headless Chromium driven by playwright-core, against a real
// `serve` process over real TLS (the dev CA's leaf is trusted by its SPKI hash;
// certificate checks stay on). The page is bundled from test/browser/page.ts
// with esbuild at test time. It pings, reserves a group id through Submit and
// reads DS errors (code and DSErrorDetail); a page from an origin the DS was
// not told about gets nothing back, because the browser enforces CORS.
import { createHash, createPublicKey } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";
import type { BrowserProtocol, ScenarioResult } from "./page.js";

const chromiumPath = "/usr/bin/chromium";
const domain = "localhost";

let ca: DevCa;
let dataDir: string;
let profileDir: string;
let serve: ServeProcess;
let pages: Server;
let pagePort: number;
let context: BrowserContext;
let page: Page;

/** base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: Chromium's pin format. */
function spkiHash(certPem: Buffer): string {
  const spki = createPublicKey(certPem).export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: apt-get install chromium (.ci/run does)`);
  }
  const started = performance.now();
  const bundle = await build({
    entryPoints: [join(import.meta.dirname, "page.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0]!.contents;
  const html = '<!doctype html><meta charset="utf-8"><title>loading</title><script type="module" src="/page.js"></script>';
  pages = createServer((req, res) => {
    if (req.url === "/page.js") res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else if (req.url === "/") res.writeHead(200, { "content-type": "text/html" }).end(html);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => pages.listen(0, "127.0.0.1", resolve));
  pagePort = (pages.address() as { port: number }).port;

  ca = await makeDevCa([domain]);
  dataDir = await mkdtemp(join(tmpdir(), "mimi-ds-browser-"));
  // Only the page's own origin; http://localhost:<port> (same server) is another origin and stays out.
  serve = await spawnServe({ domain, dataDir, certsDir: ca.dir, args: ["--cors-origin", `http://127.0.0.1:${pagePort}`] });

  profileDir = await mkdtemp(join(tmpdir(), "mimi-ds-chromium-"));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--ignore-certificate-errors-spki-list=${spkiHash(ca.domain(domain).cert)}`,
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  console.log(`browser test set-up: ${Math.round(performance.now() - started)} ms (bundle, serve, chromium)`);
});

afterAll(async () => {
  await context?.close();
  await serve?.stop();
  await new Promise<void>((resolve) => (pages ? pages.close(() => resolve()) : resolve()));
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  await ca?.cleanup();
});

async function open(origin: string): Promise<void> {
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => (globalThis as unknown as { document: { title: string } }).document.title === "ready");
}

describe("a page on another origin, in Chromium", () => {
  it.each<BrowserProtocol>(["connect", "connect-json", "grpc-web"])(
    "%s: Ping, Submit (request_group_id) and DS errors with their DSErrorDetail",
    async (protocol) => {
      await open(`http://127.0.0.1:${pagePort}`);
      const result = (await page.evaluate(
        ([url, p]) => (globalThis as unknown as { mimi: { scenario: (u: string, p: string) => Promise<unknown> } }).mimi.scenario(url, p),
        [serve.url, protocol] as const,
      )) as ScenarioResult;
      expect(result.origin).toBe(`http://127.0.0.1:${pagePort}`);
      expect(new URL(serve.url).origin).not.toBe(result.origin);
      expect(result.domain).toBe(domain);
      expect(result.groupId).toMatch(new RegExp(`^[A-Za-z0-9_-]{22}@${domain}$`));
      expect(result.raw.rpcCode).toBe("InvalidArgument");
      expect(result.raw.detailCode).toBe("decode_error");
      expect(result.raw.detailMessage.length).toBeGreaterThan(10);
      expect(result.dsError.codeName).toBe("unknown_group");
      expect(result.dsError.rpcCode).toBe("NotFound");
      expect(result.dsError.message.length).toBeGreaterThan(10);
    },
  );

  it.each<BrowserProtocol>(["connect", "grpc-web"])("%s: a page from an origin not in --cors-origin gets no answer", async (protocol) => {
    await open(`http://localhost:${pagePort}`);
    const console: string[] = [];
    const onConsole = (m: { text(): string }) => console.push(m.text());
    page.on("console", onConsole);
    const outcome = await page.evaluate(
      ([url, p]) => (globalThis as unknown as { mimi: { blocked: (u: string, p: string) => Promise<string> } }).mimi.blocked(url, p),
      [serve.url, protocol] as const,
    );
    expect(outcome).not.toBe("answered");
    expect(outcome).toMatch(/fetch/i); // the browser's own "Failed to fetch"
    page.off("console", onConsole);
    // Blocked for CORS, not for TLS or anything else: Chromium says so.
    expect(console.join("\n")).toMatch(/blocked by CORS policy/);
  });
});
