// Strong consistency under concurrency: of N commits for one epoch exactly
// one is accepted (on one instance, and across two instances sharing one
// store); KeyPackages are never handed out twice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDSTransport, DSClient, DSRequestError, type MimiMember } from "../../src/client/index.js";
import { localClientDirectory } from "../../src/delivery/index.js";
import { createDeliveryService } from "../../src/ds/service.js";
import { keyPackageRef, engineCrypto } from "../../src/mls/index.js";
import { openStore } from "../../src/store/index.js";
import type { Store } from "../../src/store/port.js";
import { DSErrorCode, encodeKeyPackageBytes } from "../../src/wire/index.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { startHub, type HubFixture } from "./fixture.js";
import { join } from "node:path";

let f: HubFixture;
beforeAll(async () => {
  // 50 fetches of one client's packages below: above the default per-target rate.
  f = await startHub("hub.example", { policy: { keyPackages: { perTarget: { limit: 1000, windowMs: 3_600_000 } } } });
});
afterAll(() => f?.close());

async function groupOf(n: number, prefix: string): Promise<{ groupId: Uint8Array; members: MimiMember[] }> {
  const creator = await f.member(`${prefix}0`);
  const groupId = await creator.createGroup(await f.hubSender());
  const others: MimiMember[] = [];
  for (let i = 1; i < n; i++) others.push(await f.member(`${prefix}${i}`));
  await creator.add(await Promise.all(others.map(async (m) => (await m.generateKeyPackage()).publicPackage)));
  for (const m of others) await f.deliver(m);
  return { groupId, members: [creator, ...others] };
}

const outcome = (results: PromiseSettledResult<unknown>[]) => ({
  accepted: results.filter((r) => r.status === "fulfilled").length,
  wrongEpoch: results.filter((r) => r.status === "rejected" && r.reason instanceof DSRequestError && r.reason.code === DSErrorCode.wrong_epoch).length,
});

describe("concurrent commits", () => {
  it("exactly one of 20 concurrent commits for one epoch is accepted", async () => {
    const { groupId, members } = await groupOf(20, "c");
    const epoch = (await f.hosted(groupId))!.epoch;
    const results = await Promise.allSettled(members.map((m) => m.update()));
    expect(outcome(results)).toEqual({ accepted: 1, wrongEpoch: 19 });
    expect((await f.hosted(groupId))!.epoch).toBe(epoch + 1n);
  });

  it("exactly one is accepted when the commits arrive at two instances sharing one store", async () => {
    // A second DS process would do the same: its own connection to the same SQLite file.
    const store2: Store = await openStore(join(f.dir, "ds.sqlite"));
    const ds2 = await createDeliveryService({ domain: f.domain, store: store2, localClients: localClientDirectory({ store: store2, tokens: f.tokens, domain: f.domain }) });
    const server2: TestServer = await startTestServer(f.ca, f.domain, ds2.handler, { hubInfo: ds2.hubInfo });
    const t2 = createDSTransport({ baseUrl: server2.url, ca: f.ca.ca });
    try {
      const hub2 = new DSClient(t2);
      const { groupId, members } = await groupOf(10, "m");
      // Warm the second instance's cache so both judge against the same epoch.
      await hub2.externalCommitInfo(groupId);
      const epoch = (await f.hosted(groupId))!.epoch;
      const viaSecond = members.filter((_, i) => i % 2 === 1);
      for (const m of viaSecond) (m as { hub: DSClient }).hub = hub2;
      const results = await Promise.allSettled(members.map((m) => m.update()));
      expect(outcome(results)).toEqual({ accepted: 1, wrongEpoch: 9 });
      // The store, read afresh, agrees.
      f.ds.context.groups.evict((await f.hosted(groupId))!.key);
      expect((await f.hosted(groupId))!.epoch).toBe(epoch + 1n);
    } finally {
      t2.close();
      await server2.close();
      await store2.close();
    }
  });
});

describe("KeyPackage consumption", () => {
  it("hands out no KeyPackage twice under 50 concurrent fetches (the last-resort one repeats)", async () => {
    const owner = await f.member("kp-owner");
    const requesters = await Promise.all(Array.from({ length: 5 }, (_, i) => f.member(`kp-requester-${i}`)));
    const c = await engineCrypto("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
    const upload = async (lastResort: boolean) => {
      const kp = (await owner.generateKeyPackage({ lastResort })).publicPackage;
      return { ref: keyPackageRef(c, kp), ciphersuite: 1, keyPackage: encodeKeyPackageBytes(kp) };
    };
    const packages = await Promise.all(Array.from({ length: 30 }, () => upload(false)));
    const lastResort = await upload(true);
    await f.store.apply({
      ops: [
        { kind: "publishKeyPackages", clientId: owner.clientId, keyPackages: packages, lastResort },
      ],
    });
    const fetched = await Promise.all(Array.from({ length: 50 }, (_, i) => f.hub.keyPackages([owner.clientId], [1], requesters[i % 5]!.registeredAuth())));
    const refs = fetched.map((kps) => Buffer.from(keyPackageRef(c, kps[0]!)).toString("hex"));
    const lr = Buffer.from(lastResort.ref).toString("hex");
    const ordinary = refs.filter((r) => r !== lr);
    expect(ordinary.length).toBe(30);
    expect(new Set(ordinary).size).toBe(30);
    expect(refs.filter((r) => r === lr).length).toBe(20);
  });
});
