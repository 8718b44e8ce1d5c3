// DSRequest rate limits (draft Section 11): over the limit a request gets
// rate_limited (ResourceExhausted) and changes nothing; other clients go on.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DSRequestError, type MimiMember } from "../../src/client/index.js";
import { parseRateRule } from "../../src/ds/rate-limit.js";
import { DSErrorCode } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;

beforeAll(async () => {
  f = await startHub("hub.example", { rateLimits: { perClient: { limit: 5, windowMs: 60_000 } } });
  alice = await f.member("alice");
  bob = await f.member("bob");
  await alice.createGroup(await f.hubSender());
  await alice.add([(await bob.generateKeyPackage()).publicPackage]);
  await f.deliver(bob);
});
afterAll(() => f?.close());

describe("rate limits", () => {
  it("refuses a client's requests beyond its limit, and only that client's", async () => {
    // add_clients counted one of alice's five (create_group is not counted: the group did not exist yet).
    for (let i = 0; i < 4; i++) await alice.send(`m${i}`);
    const err = await alice.send("one too many").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DSRequestError);
    expect((err as DSRequestError).code).toBe(DSErrorCode.rate_limited);
    expect((await f.deliver(bob)).filter((r) => r.kind === "application").map((r) => (r as { text: string }).text)).toEqual(["m0", "m1", "m2", "m3"]);
    await bob.send("bob is not limited");
    expect((await f.deliver(alice)).map((r) => r.kind)).toEqual(["application"]);
  });

  it("parses rates from flags", () => {
    expect(parseRateRule("20/s")).toEqual({ limit: 20, windowMs: 1000 });
    expect(parseRateRule("100/m")).toEqual({ limit: 100, windowMs: 60_000 });
    expect(() => parseRateRule("fast")).toThrow(/N\/s/);
  });
});
