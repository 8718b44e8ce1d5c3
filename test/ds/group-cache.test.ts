// Issue 13 item 9: the parsed-group cache is bounded by (estimated) bytes,
// not only by count. An attacker creating groups with megabyte credentials
// (allowed here by raising the credential limit; the default refuses them,
// test/ds/impersonation.test.ts) cannot make the hub hold more than the
// budget; evicted groups still serve from the store. A seeded driver checks
// the cache's invariants (bound, recency) over random puts, gets and deletes.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MimiMember } from "../../src/client/index.js";
import { estimatedBytes, GroupCache } from "../../src/ds/group-cache.js";
import { groupKey, HostedGroup } from "../../src/ds/groups.js";
import { startHub, type HubFixture } from "./fixture.js";

const BUDGET = 24 * 1024 * 1024;
const CRED = 1024 * 1024;
let f: HubFixture;
beforeAll(async () => {
  f = await startHub("hub.example", { policy: { foreignMembers: "allow", maxCredentialBytes: 2 * CRED, groupCacheBytes: BUDGET } });
});
afterAll(() => f?.close());

describe("group cache by bytes", () => {
  it("holds at most its byte budget of groups with 1 MiB credentials; evicted ones reload", async () => {
    const sender = await f.hubSender();
    const ids: Uint8Array[] = [];
    for (let i = 0; i < 12; i++) {
      const m = await MimiMember.create({ clientId: `mimi://x.example/u/${i}/${"c".repeat(CRED)}`, hub: f.hub });
      m.token = { token: randomBytes(16) };
      ids.push(await m.createGroup(sender));
      const use = f.ds.context.groups.cacheUse;
      expect(use.bytes).toBeLessThanOrEqual(BUDGET);
    }
    const use = f.ds.context.groups.cacheUse;
    // Each weighs more than 4 MiB by the estimate: at most 5 fit.
    expect(use.groups).toBeLessThanOrEqual(Math.floor(BUDGET / estimatedBytes(CRED, 1)));
    expect(use.groups).toBeGreaterThan(0);
    // The first group left the cache and is served from the store again.
    expect(f.ds.context.groups.has(groupKey(ids[0]!))).toBe(false);
    const info = await f.hub.externalCommitInfo(ids[0]!);
    expect(info.groupInfo.wireformat).toBe("mls_group_info");
    expect(f.ds.context.groups.cacheUse.bytes).toBeLessThanOrEqual(BUDGET);
  });
});

describe("GroupCache (seeded)", () => {
  it("keeps weight <= budget (or one entry), the most recent entry, and LRU order", async () => {
    const owner = await f.member("cache-owner");
    const group = (await f.hosted(await owner.createGroup(await f.hubSender())))!;
    let seed = 9;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const unit = estimatedBytes(1000, 1);
    const cache = new GroupCache(unit * 5 + 10, 8);
    const model: string[] = []; // recency order of what may be cached, oldest first
    const touch = (key: string) => {
      const at = model.indexOf(key);
      if (at >= 0) model.splice(at, 1);
      model.push(key);
    };
    for (let step = 0; step < 2000; step++) {
      const key = `g${rand(20)}`;
      const op = rand(3);
      if (op === 0) {
        cache.put(new HostedGroup(key, group.state, group.metadata, group.tokens, 0), { bytes: 1000 * (1 + rand(3)) }, () => 0);
        touch(key);
        expect(cache.has(key)).toBe(true);
      } else if (op === 1) {
        if (cache.get(key) !== undefined) touch(key);
      } else {
        cache.delete(key);
        if (model.includes(key)) model.splice(model.indexOf(key), 1);
      }
      // Evictions take the least recently used: what is cached is a suffix of the recency order.
      const first = model.findIndex((k) => cache.has(k));
      if (first >= 0) for (const k of model.slice(first)) expect(cache.has(k), k).toBe(true);
      model.splice(0, first >= 0 ? first : model.length);
      expect(cache.size).toBe(model.length);
      expect(cache.weight <= unit * 5 + 10 || cache.size === 1).toBe(true);
      expect(cache.size).toBeLessThanOrEqual(8);
    }
  });
});
