// Nothing acknowledged is lost: a real `serve` process is killed with SIGKILL
// in the middle of traffic and started again on the same data directory.
// Every acknowledged message is in the recipient's queue, in order, and the
// group state rebuilt from the store accepts the next commit.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExternalSender } from "ts-mls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDSTransport, DSClient, MimiMember, type DSTransport } from "../../src/client/index.js";
import { openStore } from "../../src/store/index.js";
import { clientQueue } from "../../src/store/port.js";
import { pullInbox } from "../helpers/inbox.js";
import { decodeWith, externalSenderCodec } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const DOMAIN = "hub.example";
let ca: DevCa;
let dataDir: string;
const opened: { transport?: DSTransport; server?: ServeProcess }[] = [];

beforeAll(async () => {
  ca = await makeDevCa([DOMAIN]);
  dataDir = await mkdtemp(join(tmpdir(), "mimi-ds-restart-"));
});
afterAll(async () => {
  for (const o of opened) {
    o.transport?.close();
    if (o.server !== undefined && o.server.child.exitCode === null) await o.server.crash();
  }
  await ca?.cleanup();
  await rm(dataDir, { recursive: true, force: true });
});

async function start(): Promise<{ server: ServeProcess; hub: DSClient; transport: DSTransport }> {
  const server = await spawnServe({ domain: DOMAIN, dataDir, certsDir: ca.dir });
  const transport = createDSTransport({ baseUrl: server.url, ca: ca.ca });
  opened.push({ server, transport });
  return { server, hub: new DSClient(transport), transport };
}

describe("crash and restart", () => {
  it("keeps every acknowledged request after SIGKILL", async () => {
    const first = await start();
    const info = await first.hub.hub.hubInfo({ cipherSuite: 1 });
    const hubSender: ExternalSender = decodeWith(externalSenderCodec, info.externalSender, "ExternalSender");
    const alice = await MimiMember.create({ clientId: `mimi://${DOMAIN}/u/alice/d/1`, hub: first.hub, local: first.transport });
    const bob = await MimiMember.create({ clientId: `mimi://${DOMAIN}/u/bob/d/1`, hub: first.hub, local: first.transport });
    await alice.register();
    await bob.register();
    const groupId = await alice.createGroup(hubSender);
    await alice.add([(await bob.generateKeyPackage()).publicPackage]);

    // Traffic until the crash: sends one after another, and the kill lands mid-stream.
    const acked: string[] = [];
    let stop = false;
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        const text = `message ${i}`;
        try {
          await alice.send(text);
          acked.push(text);
          if (i % 7 === 3) await alice.update();
        } catch {
          return;
        }
      }
    })();
    while (acked.length < 25) await new Promise((r) => setTimeout(r, 5));
    await first.server.crash();
    stop = true;
    await traffic;

    // Restart on the same data directory; the group is rebuilt from snapshot and epoch log.
    const second = await start();
    (alice as { hub: DSClient }).hub = second.hub;
    (bob as { hub: DSClient }).hub = second.hub;
    const info2 = await second.hub.externalCommitInfo(groupId);
    expect(info2.groupInfo.wireformat).toBe("mls_group_info");

    // Bob's queue holds the Welcome, every acknowledged message and commit, in order.
    const store = await openStore(join(dataDir, "ds.sqlite"));
    try {
      await pullInbox(store, bob.clientId);
      const entries = await store.read(clientQueue(bob.clientId), 0n, 10_000);
      const texts: string[] = [];
      for (const e of entries) {
        const r = await bob.processIncoming(e.payload);
        if (r.kind === "application") texts.push(r.text);
      }
      // A request in flight at the kill may have been committed without its answer arriving.
      expect(texts.slice(0, acked.length)).toEqual(acked);
      expect(texts.length - acked.length).toBeLessThanOrEqual(1);
    } finally {
      await store.close();
    }

    // Bob, having processed every queued commit, is exactly where the rebuilt hub is...
    const gc = info2.groupInfo.wireformat === "mls_group_info" ? info2.groupInfo.groupInfo.groupContext : undefined;
    expect(bob.epoch).toBe(gc!.epoch);
    expect(Buffer.from(bob.treeHash).equals(Buffer.from(gc!.treeHash))).toBe(true);
    // ...and the rebuilt state accepts his next commit.
    await bob.update();
    await second.server.stop();
  });
});
