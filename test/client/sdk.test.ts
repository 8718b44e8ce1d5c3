// The SDK as a client author uses it (docs/sdk.md), against a real `serve`
// process over TLS: MimiClient identities in many groups at once, each
// running its queue through client.receive() (the Receiver: reconnects,
// resumes, acknowledges); a seeded random driver of sends, updates and
// removals across groups, with the invariants that every member of a group
// agrees on epoch and tree hash and gets every other member's messages once, in
// order; prepare/submit for the operations that lacked it, including a
// prepared commit that lost its epoch; and a Receiver that outlives a crash of
// the server.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDSTransport,
  DSClient,
  DSRequestError,
  MimiClient,
  type ClientIncoming,
  type DSTransport,
  type MimiGroup,
} from "../../src/client/index.js";
import { DSErrorCode, readExternalSenders } from "../../src/wire/index.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";
import { prng } from "../helpers/prng.js";

const domain = "localhost";
let ca: DevCa;
let dataDir: string;
let serve: ServeProcess;
const transports: DSTransport[] = [];
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  ca = await makeDevCa([domain]);
  dataDir = await mkdtemp(join(tmpdir(), "mimi-ds-sdk-"));
  serve = await spawnServe({ domain, dataDir, certsDir: ca.dir });
});
afterAll(async () => {
  for (const stop of stops.splice(0)) await stop();
  for (const t of transports) t.close();
  await serve?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  await ca?.cleanup();
});

function transport(): DSTransport {
  const t = createDSTransport({ baseUrl: `https://localhost:${serve.port}`, ca: ca.ca, pingIntervalMs: 5_000 });
  transports.push(t);
  return t;
}

/** A registered client with its own transport, its queue running through receive() in the background. */
interface Running {
  readonly client: MimiClient;
  readonly seen: ClientIncoming[];
  readonly reconnects: number[];
  stop(): Promise<void>;
}

async function running(name: string): Promise<Running> {
  const t = transport();
  const client = await MimiClient.create({ clientId: `${name}:1@${domain}`, hub: new DSClient(t), local: t });
  await client.register();
  const seen: ClientIncoming[] = [];
  const reconnects: number[] = [];
  const abort = new AbortController();
  const loop = client.receive({
    signal: abort.signal,
    initialDelayMs: 50,
    maxDelayMs: 500,
    onReconnect: ({ attempt }) => reconnects.push(attempt),
    onMessage: (m) => {
      seen.push(m);
    },
  });
  let failure: unknown;
  loop.catch((err: unknown) => {
    failure = err;
    console.error(`${name}: receive loop failed`, err);
  });
  const stop = async () => {
    abort.abort();
    await loop.catch(() => undefined);
  };
  stops.push(stop);
  return {
    client,
    seen,
    reconnects,
    stop: async () => {
      await stop();
      if (failure !== undefined) throw failure;
    },
  };
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("MimiClient and MimiGroup against serve", () => {
  it("hubInfo() decodes the hub's ExternalSender, and createGroup puts exactly it into external_senders", async () => {
    const alice = await running("hubinfo-alice");
    const info = await alice.client.hub!.hubInfo(alice.client.cipherSuite);
    expect(info.domain).toBe(domain);
    expect(info.protocolVersions).toContain(1);
    const group = await alice.client.createGroup();
    expect(readExternalSenders(group.state!.groupContext.extensions)).toEqual([info.externalSender]);
    await alice.stop();
  });

  it("publishKeyPackages returns what it published, and key_packages hands out exactly those", async () => {
    const bob = await running("kp-bob");
    const published = await bob.client.publishKeyPackages(3, { lastResort: true });
    expect(published.keyPackages).toHaveLength(3);
    expect(published.stored).toBe(3);
    expect(published.lastResort?.lastResort).toBe(true);
    const refs = new Set(published.keyPackages.map((k) => hexOf(k.ref)));
    const fetcher = new DSClient(transport());
    // Fetched as a registered client of the same DS (anonymous fetches are refused, docs/security.md).
    const asker = await running("kp-asker");
    const auth = () => asker.client.registeredAuth();
    for (let i = 0; i < 3; i++) {
      const [kp] = await fetcher.keyPackages([bob.client.clientId], [], auth());
      const ref = hexOf(await makeKeyPackageRef(kp!, bob.client.cs.hash));
      expect(refs.delete(ref), `fetch ${i}: an unpublished or repeated KeyPackage`).toBe(true);
    }
    // Only the last-resort one is left, and it repeats.
    const lastRef = hexOf(published.lastResort!.ref);
    for (let i = 0; i < 2; i++) {
      const [kp] = await fetcher.keyPackages([bob.client.clientId], [], auth());
      expect(hexOf(await makeKeyPackageRef(kp!, bob.client.cs.hash))).toBe(lastRef);
    }
    await bob.stop();
    await asker.stop();
  });

  it("one client in several groups: a seeded random driver keeps every group consistent and every message delivered once, in order", async () => {
    const seed = 20261201;
    const rand = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const people = await Promise.all(["alice", "bob", "carol", "dave"].map((n) => running(`multi-${n}`)));
    for (const p of people) await p.client.publishKeyPackages(6);
    const [alice] = people as [Running, ...Running[]];

    // Three groups, made by alice; members chosen at random (alice is in all of them).
    interface Model {
      readonly id: Uint8Array;
      members: Running[];
      epoch: bigint;
      /** Application messages per receiving member id, in send order. */
      readonly expected: Map<string, string[]>;
    }
    const groups: Model[] = [];
    for (let g = 0; g < 3; g++) {
      const group = await alice.client.createGroup();
      const others = people.slice(1).filter(() => rand() < 0.7);
      if (others.length === 0) others.push(people[1]!);
      await group.addClients(others.map((o) => o.client.clientId));
      const model: Model = { id: group.groupId, members: [alice, ...others], epoch: group.epoch, expected: new Map() };
      for (const m of model.members) model.expected.set(m.client.clientId, []);
      groups.push(model);
    }
    const groupOf = (p: Running, m: Model): MimiGroup | undefined => p.client.group(m.id);
    const caughtUp = (m: Model) =>
      until(`group ${groups.indexOf(m)} at epoch ${m.epoch}`, () => m.members.every((p) => groupOf(p, m)?.epoch === m.epoch));
    for (const m of groups) await caughtUp(m);

    const steps: string[] = [];
    for (let step = 0; step < 24; step++) {
      const m = pick(groups);
      const actor = pick(m.members);
      const group = groupOf(actor, m)!;
      const r = rand();
      if (r < 0.6 || m.members.length <= 2) {
        const text = `step ${step} from ${actor.client.clientId}`;
        await group.send(text);
        for (const p of m.members) if (p !== actor) m.expected.get(p.client.clientId)!.push(text);
        steps.push(`send g${groups.indexOf(m)}`);
      } else if (r < 0.85) {
        const op = await group.prepareUpdate();
        await group.submit(op);
        m.epoch++;
        steps.push(`update g${groups.indexOf(m)}`);
      } else {
        const target = pick(m.members.filter((p) => p !== actor && p !== alice));
        if (target === undefined) continue;
        await group.remove([target.client.clientId]);
        m.members = m.members.filter((p) => p !== target);
        m.epoch++;
        steps.push(`remove g${groups.indexOf(m)}`);
        await until("the removal", () => groupOf(target, m)?.active === false);
      }
      await caughtUp(m);
    }

    // Every application message was delivered once, in order, to the right group.
    for (const m of groups) {
      for (const p of m.members) {
        await until(`${p.client.clientId}'s messages in group ${groups.indexOf(m)}`, () => {
          const got = p.seen.filter((s) => s.group !== undefined && hexOf(s.group.groupId) === hexOf(m.id) && s.result.kind === "application");
          return got.length >= m.expected.get(p.client.clientId)!.length;
        });
        const got = p.seen
          .filter((s) => s.group !== undefined && hexOf(s.group.groupId) === hexOf(m.id) && s.result.kind === "application")
          .map((s) => (s.result as { text: string }).text);
        expect(got, `seed ${seed}, steps ${steps.join(", ")}`).toEqual(m.expected.get(p.client.clientId));
      }
      const hashes = new Set(m.members.map((p) => hexOf(groupOf(p, m)!.treeHash)));
      expect(hashes.size, `seed ${seed}: tree hashes of group ${groups.indexOf(m)}`).toBe(1);
    }
    for (const p of people) {
      expect(p.seen.filter((s) => s.group === undefined)).toEqual([]);
      await p.stop();
    }
    expect(alice.client.groups).toHaveLength(3);
  });

  it("prepare/submit: a commit that lost its epoch is refused, changes nothing, and can be prepared again", async () => {
    const alice = await running("race-alice");
    const bob = await running("race-bob");
    await bob.client.publishKeyPackages(2);
    const group = await alice.client.createGroup();
    await group.addClients([bob.client.clientId]);
    await until("bob joined", () => bob.client.group(group.groupId)?.epoch === group.epoch);
    const bobs = bob.client.group(group.groupId)!;

    const mine = await group.prepareUpdate();
    await bobs.update(); // wins the epoch
    const epoch = group.epoch;
    const refused = await group.submit(mine).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(DSRequestError);
    expect((refused as DSRequestError).code).toBe(DSErrorCode.wrong_epoch);
    expect((refused as DSRequestError).currentEpoch).toBe(epoch + 1n);
    expect(group.epoch).toBe(epoch);
    await until("alice processed bob's commit", () => group.epoch === epoch + 1n);
    await expect(group.submit(mine)).rejects.toThrow(/prepare it again/);

    // commitPending: bob proposes to leave, alice commits the stored proposal.
    const leave = await bobs.prepareSelfRemove();
    await bobs.submit(leave);
    await until("alice stored bob's proposal", () => Object.keys(group.state!.unappliedProposals).length === 1);
    const pending = await group.prepareCommitPending();
    expect(pending.body.requestType).toBe("remove_clients");
    await group.submit(pending);
    expect(group.members().map((m) => m.clientId)).toEqual([alice.client.clientId]);
    await until("bob saw his removal", () => bobs.active === false);

    // reinitialize, then delete: both prepared and submitted; delete drops the group from the client.
    const reinit = await group.prepareReinitialize(new TextEncoder().encode(`next@${domain}`));
    expect(reinit.body.requestType).toBe("reinitialize_group");
    await group.submit(reinit);
    const other = await alice.client.createGroup();
    expect(alice.client.group(other.groupId)).toBe(other);
    const del = await other.prepareDelete();
    expect(del.newState).toBeUndefined();
    await other.submit(del);
    expect(alice.client.group(other.groupId)).toBeUndefined();
    expect(other.state).toBeUndefined();
    await alice.stop();
    await bob.stop();
  });
});

describe("Receiver", () => {
  it("reconnects after the server crashed, resumes, and delivers every message once, in order", async () => {
    const alice = await running("crash-alice");
    const bob = await running("crash-bob");
    await bob.client.publishKeyPackages(1);
    const group = await alice.client.createGroup();
    await group.addClients([bob.client.clientId]);
    const texts = (from: number, n: number) => Array.from({ length: n }, (_, i) => `m${from + i}`);
    for (const t of texts(0, 5)) await group.send(t);
    const apps = () => bob.seen.filter((s) => s.result.kind === "application").map((s) => (s.result as { text: string }).text);
    await until("the first five", () => apps().length === 5);

    // kill -9, and the same DS back on the same port and data directory.
    const port = serve.port;
    await serve.crash();
    serve = await spawnServe({ domain, dataDir, certsDir: ca.dir, args: ["--listen", `127.0.0.1:${port}`] });
    for (const t of texts(5, 5)) await group.send(t);
    await until("the next five", () => apps().length >= 10);
    expect(apps()).toEqual(texts(0, 10));
    expect(bob.reconnects.length).toBeGreaterThan(0);
    await bob.stop();
    await alice.stop();

    // Everything handled was acknowledged: a fresh stream from 0 has nothing left for bob.
    const leftover: bigint[] = [];
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 1_000);
    try {
      for await (const m of bob.client.local!.receive(0n, abort.signal)) leftover.push(m.sequence);
    } catch {
      // Canceled by the timer.
    } finally {
      clearTimeout(timer);
    }
    expect(leftover).toEqual([]);
  });
});
