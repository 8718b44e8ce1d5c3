// Child process of the crash test: applies batches in a loop and prints
// "<seq> <epoch>" after each acknowledged apply, until it is killed.
// argv: <store uri>

import { openStore, clientQueue } from "../../src/store/index.js";

const uri = process.argv[2];
if (!uri) throw new Error("usage: crash-child <store uri>");
const store = await openStore(uri);
const queue = clientQueue("crash");
let epoch = (await store.groupEpoch("crash-group")) ?? undefined;
if (epoch === undefined) {
  await store.apply({ ops: [{ kind: "createGroup", groupId: "crash-group", epoch: 0n, snapshot: new Uint8Array(64) }] });
  epoch = 0n;
}
const payload = new Uint8Array(1024);
process.stdout.write("ready\n");
for (;;) {
  const n = epoch + 1n;
  new DataView(payload.buffer).setBigUint64(0, n);
  const r = await store.apply({
    ops: [
      { kind: "advanceGroup", groupId: "crash-group", expectedEpoch: epoch, logEntry: payload.slice(0, 16), ...(n % 50n === 0n ? { snapshot: payload } : {}) },
      { kind: "append", queue, payload },
    ],
  });
  epoch = r.epochs[0]!.epoch;
  // Acknowledged: only now may the "client" learn about it.
  process.stdout.write(`${r.appended[0]!.seq} ${epoch}\n`);
}
