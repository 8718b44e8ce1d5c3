// docs/federation.md section 0, followed as two operators would: dev-certs
// with an extra SAN, `keys` before the first start, peers files made of the
// printed entries, two real `serve` processes, `check-peer` both ways. Then
// what check-peer says when something is wrong (a stale fanout key, an
// endpoint of another DS, a DS that does not know us), and the fanout
// streams the two keep, seen in their metrics.
import { X509Certificate } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { reservedPort } from "../helpers/ports.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const A = "a.example";
const B = "b.example";
let root: string;
const servers = new Map<string, ServeProcess>();
const ports = new Map<string, number>();

interface PeerEntry {
  domain: string;
  endpoint: string;
  ca: string;
  dsSignatureKey: string;
}

const op = (domain: string) => join(root, domain);
const certs = () => join(root, "certs");
const cert = (domain: string) => ["--cert", join(certs(), domain, "cert.pem"), "--key", join(certs(), domain, "key.pem")];

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  expect(r.code, `${args.join(" ")}\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}

async function scrape(domain: string): Promise<string> {
  const url = String(servers.get(domain)!.lines.find((l) => l.msg === "listening")!.metrics);
  return (await fetch(url)).text();
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "mimi-ds-fedsetup-"));
  for (const d of [A, B]) ports.set(d, await reservedPort());

  // 1. Certificates (one trial CA, as in the docs), the endpoint's host as an extra name.
  for (const d of [A, B]) await ok(["dev-certs", "--out", certs(), "--domain", d, "--san", `ds.${d}`]);
  // 2. Keys before the first start; each operator prints its entry for the other.
  const entries = new Map<string, PeerEntry>();
  for (const d of [A, B]) {
    await mkdir(op(d));
    await copyFile(join(certs(), "ca.pem"), join(op(d), `${d}-ca.pem`));
    const out = await ok(["keys", "--domain", d, "--data-dir", join(op(d), "data"), "--endpoint", `https://localhost:${ports.get(d)}`, "--ca", `${d}-ca.pem`]);
    entries.set(d, JSON.parse(out) as PeerEntry);
  }
  // 3. Each writes the other's entry (and its CA file) into its peers file.
  for (const [me, them] of [
    [A, B],
    [B, A],
  ] as const) {
    await copyFile(join(op(them), `${them}-ca.pem`), join(op(me), `${them}-ca.pem`));
    await writeFile(join(op(me), "peers.json"), JSON.stringify([entries.get(them)], null, 2));
  }
  // 4. Start both.
  for (const d of [A, B]) {
    servers.set(
      d,
      await spawnServe({
        domain: d,
        dataDir: join(op(d), "data"),
        certsDir: certs(),
        args: ["--listen", `127.0.0.1:${ports.get(d)}`, "--peers", join(op(d), "peers.json"), "--metrics-listen", "127.0.0.1:0"],
      }),
    );
  }
});

afterAll(async () => {
  for (const s of servers.values()) await s.stop();
  await rm(root, { recursive: true, force: true });
});

describe("two operators federate by docs/federation.md", () => {
  it("dev-certs put the domain first, then the extra name", async () => {
    const x = new X509Certificate(await readFile(join(certs(), A, "cert.pem")));
    expect(x.subjectAltName).toBe("DNS:a.example, DNS:ds.a.example, DNS:localhost, IP Address:127.0.0.1");
  });

  it("check-peer passes both ways, and the fanout streams are up", async () => {
    for (const [me, them] of [
      [A, B],
      [B, A],
    ] as const) {
      const r = await runCli(["check-peer", "--peers", join(op(me), "peers.json"), ...cert(me)]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(`ok   ${them} (https://localhost:${ports.get(them)}): answers for ${them}, fanout key matches, accepts ${me}'s client certificate over mutual TLS`);
      expect(r.stderr).toContain(`this DS presents a certificate for ${me}`);
    }
    // Each serves the other's Subscribe stream (hub side), with nothing waiting in its outbox.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const [a, b] = [await scrape(A), await scrape(B)];
      const up =
        a.includes(`mimi_ds_fanout_streams_open{guest="${B}"} 1`) &&
        b.includes(`mimi_ds_fanout_streams_open{guest="${A}"} 1`) &&
        a.includes(`mimi_ds_outbox_entries{peer="${B}"} 0`) &&
        b.includes(`mimi_ds_outbox_oldest_age_seconds{peer="${A}"} 0`);
      if (up) break;
      if (Date.now() > deadline) throw new Error(`fanout streams not up:\n${a}\n${b}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  });

  it("check-peer says what is wrong: a stale fanout key, another DS's endpoint, a DS that does not know us", async () => {
    const good = JSON.parse(await readFile(join(op(A), "peers.json"), "utf8")) as PeerEntry[];
    const bad = join(op(A), "bad-peers.json");
    const stale = { ...good[0]!, dsSignatureKey: Buffer.alloc(32, 7).toString("base64") };
    const elsewhere = { ...good[0]!, domain: "c.example", endpoint: `https://localhost:${ports.get(B)}` };
    await writeFile(bad, JSON.stringify([stale, elsewhere]));
    const r = await runCli(["check-peer", "--peers", bad, ...cert(A)]);
    expect(r.code).toBe(1);
    const [first, second] = r.stdout.trim().split("\n");
    expect(first).toMatch(/^FAIL b\.example .*its fanout key is .*, but the peers file says BwcHBwcH.*update dsSignatureKey$/);
    expect(second).toMatch(/^FAIL c\.example .*the endpoint answers for b\.example, not c\.example/);

    // A third DS, with a certificate from the same CA, that b has not configured as a peer.
    await ok(["dev-certs", "--out", certs(), "--domain", "c.example"]);
    const r2 = await runCli(["check-peer", "--peers", join(op(A), "peers.json"), ...cert("c.example")]);
    expect(r2.code).toBe(1);
    expect(r2.stdout.trim()).toMatch(
      /^FAIL b\.example .*it does not accept this DS's client certificate for c\.example \(FanoutService needs a client certificate of a peer DS \(mutual TLS\)\): its peers file must list c\.example/,
    );
    // Nothing listening there.
    const gone = join(op(A), "gone-peers.json");
    await writeFile(gone, JSON.stringify([{ ...good[0]!, endpoint: "https://127.0.0.1:1" }]));
    const r3 = await runCli(["check-peer", "--peers", gone, ...cert(A)]);
    expect(r3.code).toBe(1);
    expect(r3.stdout.trim()).toBe("FAIL b.example (https://127.0.0.1:1): nothing listens at https://127.0.0.1:1 (connection refused)");
  });
});
