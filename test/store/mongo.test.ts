// The contract on MongoDB: runs only with MONGODB_URI set to a replica set
// (transactions and change streams), e.g. `make test-mongo`.
import { randomBytes } from "node:crypto";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { openStore } from "../../src/store/index.js";
import { openMongoStore } from "../../src/store/mongo/store.js";
import { runStoreContract, waitUntil } from "./contract.js";
import { runScaleContract } from "./contract-scale.js";

const uri = process.env.MONGODB_URI;

describe.skipIf(!uri)("MongoDB adapter", () => {
  const freshDb = () => `mimi_ds_test_${randomBytes(6).toString("hex")}`;
  const drop = async (name: string) => {
    const c = new MongoClient(uri!);
    try {
      await c.db(name).dropDatabase();
    } finally {
      await c.close();
    }
  };

  runStoreContract("mongodb", async () => {
    const name = freshDb();
    return { open: () => openStore(uri!, { mongoDatabase: name }), dispose: () => drop(name) };
  });

  // Issue 16: guest feed sets, shared entry prefixes, the clients version.
  runScaleContract("mongodb", async () => {
    const name = freshDb();
    return { open: () => openStore(uri!, { mongoDatabase: name }), dispose: () => drop(name) };
  });

  it("wakes a waiter on another instance (change stream) and by polling", async () => {
    const name = freshDb();
    const a = await openMongoStore({ uri: uri!, database: name });
    const b = await openMongoStore({ uri: uri!, database: name });
    const c = await openMongoStore({ uri: uri!, database: name, changeStreams: false, pollMs: 50 });
    try {
      const seenB: bigint[] = [];
      b.subscribe("q", (s) => seenB.push(s));
      const waitC = c.waitForAppend("q", 0n);
      await new Promise((r) => setTimeout(r, 500)); // let the change stream start
      await a.apply({ ops: [{ kind: "append", queue: "q", payload: new Uint8Array([1]) }] });
      await waitUntil(() => seenB.includes(1n), 10_000);
      expect(await waitC).toBe(1n);
    } finally {
      await a.close();
      await b.close();
      await c.close();
      await drop(name);
    }
  });

  it("lets one of several instances win a commit race", async () => {
    const name = freshDb();
    const stores = await Promise.all([0, 1, 2].map(() => openMongoStore({ uri: uri!, database: name })));
    try {
      await stores[0]!.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([0]) }] });
      const r = await Promise.allSettled(
        stores.flatMap((s) =>
          [0, 1, 2].map((i) => s.apply({ ops: [{ kind: "advanceGroup", groupId: "g", expectedEpoch: 0n, logEntry: new Uint8Array([i]) }] })),
        ),
      );
      expect(r.filter((x) => x.status === "fulfilled")).toHaveLength(1);
      expect(await stores[1]!.groupEpoch("g")).toBe(1n);
    } finally {
      for (const s of stores) await s.close();
      await drop(name);
    }
  });
});
