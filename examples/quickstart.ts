// Two clients of one MIMI DS: alice makes a group, adds bob, and they talk.
// Everything goes through the package's public entry point, `mimi-ds/client`
// (docs/sdk.md). Run it against a DS started with `make run`:
//
//   make build
//   node --import tsx examples/quickstart.ts --url https://localhost:8443 --ca .dev/ca.pem
//
// It prints what happens, and as its last line one JSON object (the test
// suite runs it, test/examples/quickstart.test.ts, and reads that line).
import { parseArgs } from "node:util";
import { readFile } from "node:fs/promises";
import {
  createDSTransport,
  DSClient,
  DSRequestError,
  MimiClient,
  type ClientIncoming,
} from "mimi-ds/client";

const { values } = parseArgs({
  options: { url: { type: "string" }, ca: { type: "string" }, domain: { type: "string" } },
});
if (values.url === undefined || values.ca === undefined) {
  console.error("usage: quickstart.ts --url https://localhost:8443 --ca .dev/ca.pem [--domain localhost]");
  process.exit(2);
}
const url = values.url;
const ca = await readFile(values.ca);
const domain = values.domain ?? new URL(url).hostname;

// One HTTP/2 connection per client (gRPC by default; "connect" and "grpc-web"
// work too), to its own DS, which here is also the hub of the group.
const aliceTransport = createDSTransport({ baseUrl: url, ca });
const bobTransport = createDSTransport({ baseUrl: url, ca });
const hub = new DSClient(aliceTransport);
const info = await hub.hubInfo(1);
console.log(`DS ${info.domain} speaks DS protocol ${info.protocolVersions.join(",")}`);

// A client id names the client's domain; the signature key is made fresh.
const run = `${Date.now().toString(36)}`;
const alice = await MimiClient.create({ clientId: `alice-${run}:1@${domain}`, hub, local: aliceTransport });
const bob = await MimiClient.create({ clientId: `bob-${run}:1@${domain}`, hub: new DSClient(bobTransport), local: bobTransport });

// Register (FanoutAuthToken) and publish KeyPackages so others can add you.
await alice.register();
await bob.register();
const published = await bob.publishKeyPackages(2);
console.log(`bob published ${published.keyPackages.length} KeyPackages (the DS holds ${published.stored})`);

// Each client runs its queue: a Receiver that reconnects, resumes and acknowledges.
const stop = new AbortController();
const heard: Record<string, string[]> = { alice: [], bob: [] };
const listen = (name: "alice" | "bob", client: MimiClient) =>
  client.receive({
    signal: stop.signal,
    onMessage: (m: ClientIncoming) => {
      if (m.result.kind === "application") heard[name]!.push(m.result.text);
      console.log(`${name} <- ${m.result.kind}${m.result.kind === "application" ? `: ${m.result.text}` : ""}`);
    },
  });
const loops = [listen("alice", alice), listen("bob", bob)];

// alice creates a group on the hub (its external sender comes from HubInfo) and adds bob.
const group = await alice.createGroup();
await group.addClients([bob.clientId]);
console.log(`alice made a group and added bob (epoch ${group.epoch})`);

await waitFor(() => bob.group(group.groupId) !== undefined, "bob joined");
await group.send("hello bob");
await waitFor(() => heard.bob!.length === 1, "bob heard alice");
await bob.group(group.groupId)!.send("hello alice");
await waitFor(() => heard.alice!.length === 1, "alice heard bob");

// A DS refusal is a DSRequestError with the DS's code and sentence.
let refusal = "";
try {
  await hub.externalCommitInfo(new TextEncoder().encode(`no-such-group@${domain}`));
} catch (err) {
  if (!(err instanceof DSRequestError)) throw err;
  refusal = err.codeName;
  console.log(`the DS refused: ${err.codeName}: ${err.dsMessage}`);
}

stop.abort();
await Promise.all(loops);
aliceTransport.close();
bobTransport.close();
console.log(JSON.stringify({ domain: info.domain, epoch: Number(group.epoch), heard, refusal }));

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
