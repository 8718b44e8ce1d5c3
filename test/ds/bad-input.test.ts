// Every bad request gets a DSError with a code and a sentence, and changes
// nothing: the group's epoch, its members' queues and the stored proposals
// stay as they were.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { buildDSRequest, type MimiMember, type RequestAuth } from "../../src/client/index.js";
import {
  decodeDSResponse,
  DSErrorCode,
  encodeDSRequest,
  type DSErrorCodeName,
  type DSRequestBody,
} from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let groupId: Uint8Array;

const auth = (m: MimiMember, senderIndex = m.leafIndex): RequestAuth => ({
  kind: "member",
  senderIndex,
  signaturePrivateKey: m.signatureKeyPair.signKey,
  signature: m.cs.signature,
});

beforeAll(async () => {
  f = await startHub();
  alice = await f.member("alice");
  bob = await f.member("bob");
  groupId = await alice.createGroup(await f.hubSender());
  await alice.add([(await bob.generateKeyPackage()).publicPackage]);
  await f.deliver(bob);
});
afterAll(() => f?.close());

async function sendBody(m: MimiMember): Promise<DSRequestBody> {
  const { message } = await m.prepareSend("x");
  return { requestType: "send_message", sendMessageRequest: { applicationMessage: message } };
}

/** Submit raw bytes; the DSError code name and sentence. */
async function submit(bytes: Uint8Array): Promise<{ code: DSErrorCodeName | number; message: string }> {
  const res = decodeDSResponse(await f.hub.submit(bytes));
  if (res.responseBody.responseType !== "error") throw new Error(`expected an error, got ${res.responseBody.responseType}`);
  const e = res.responseBody.error;
  const name = (Object.entries(DSErrorCode).find(([, v]) => v === e.code)?.[0] ?? e.code) as DSErrorCodeName;
  return { code: name, message: e.message };
}

const cases: { name: string; expected: DSErrorCodeName; bytes: () => Promise<Uint8Array> }[] = [
  { name: "garbage bytes", expected: "decode_error", bytes: async () => Uint8Array.of(0, 1, ...randomBytes(40)) },
  {
    name: "truncated request",
    expected: "decode_error",
    bytes: async () => encodeDSRequest(await buildDSRequest(await sendBody(alice), auth(alice))).subarray(0, 30),
  },
  {
    name: "wrong protocol version",
    expected: "unsupported_version",
    bytes: async () => encodeDSRequest(await buildDSRequest(await sendBody(alice), auth(alice), 2)),
  },
  {
    name: "forged signature",
    expected: "authentication_failed",
    bytes: async () => {
      const b = encodeDSRequest(await buildDSRequest(await sendBody(alice), auth(alice)));
      b[b.length - 1]! ^= 0xff;
      return b;
    },
  },
  {
    name: "signature by a non-member leaf",
    expected: "permission_denied",
    bytes: async () => encodeDSRequest(await buildDSRequest(await sendBody(alice), auth(alice, 7))),
  },
  {
    name: "signed by another member's leaf index",
    expected: "authentication_failed",
    bytes: async () => encodeDSRequest(await buildDSRequest(await sendBody(alice), auth(alice, bob.leafIndex))),
  },
  {
    name: "stale epoch",
    expected: "wrong_epoch",
    bytes: async () => {
      const { message } = await alice.prepareSend("old");
      const pm = message.wireformat === "mls_private_message" ? message.privateMessage : undefined;
      const stale = { ...message, privateMessage: { ...pm!, epoch: pm!.epoch + 5n } } as typeof message;
      return encodeDSRequest(await buildDSRequest({ requestType: "send_message", sendMessageRequest: { applicationMessage: stale } }, auth(alice)));
    },
  },
  {
    name: "a Remove commit sent as add_clients",
    expected: "invalid_request",
    bytes: async () => {
      const p = await alice.prepareRemove([bob.clientId]);
      return encodeDSRequest(
        await buildDSRequest({ requestType: "add_clients", addClientsRequest: { groupUpdate: p.groupUpdate, welcomeMessages: [] } }, auth(alice)),
      );
    },
  },
  {
    name: "a proposal sent as update_client",
    expected: "invalid_request",
    bytes: async () => {
      const { message } = await alice.prepareSelfRemove();
      const p = await alice.prepareRemove([bob.clientId]);
      return encodeDSRequest(
        await buildDSRequest({ requestType: "update_client", updateClientRequest: { groupUpdate: { ...p.groupUpdate, commit: message } } }, auth(alice)),
      );
    },
  },
  {
    name: "a handshake message sent as send_message",
    expected: "invalid_request",
    bytes: async () => {
      const { message } = await alice.prepareSelfRemove();
      return encodeDSRequest(await buildDSRequest({ requestType: "send_message", sendMessageRequest: { applicationMessage: message } }, auth(alice)));
    },
  },
  {
    name: "a commit for a group this hub does not host",
    expected: "unknown_group",
    bytes: async () =>
      encodeDSRequest(await buildDSRequest({ requestType: "external_commit_info", externalCommitInfoRequest: { groupId: randomBytes(16) } }, { kind: "anonymous" })),
  },
  {
    name: "KeyPackages of a client of another domain",
    expected: "unknown_client",
    bytes: async () =>
      encodeDSRequest(
        await buildDSRequest(
          { requestType: "key_packages", keyPackagesRequest: { clientIdentifiers: [new TextEncoder().encode("mimi://elsewhere.example/u/x/d/1")], cipherSuites: [] } },
          alice.registeredAuth(),
        ),
      ),
  },
];

describe("bad requests", () => {
  it.each(cases)("$name -> $expected, and nothing changes", async ({ expected, bytes }) => {
    const before = await f.hosted(groupId);
    const queued = await f.queueLength(bob.clientId);
    const err = await submit(await bytes());
    expect(err.code).toBe(expected);
    expect(err.message.length).toBeGreaterThan(10);
    const after = await f.hosted(groupId);
    expect(after!.epoch).toBe(before!.epoch);
    expect(after!.state.proposals.size).toBe(before!.state.proposals.size);
    expect(await f.queueLength(bob.clientId)).toBe(queued);
  });

  it("a request over the limit (16 MiB by default) is too_large, with RPC status ResourceExhausted", async () => {
    const big = new Uint8Array(16 * 1024 * 1024 + 1);
    const err = await f.hub.hub.submit({ dsRequest: big }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((await submit(big)).code).toBe("too_large");
  });

  it("a valid request still goes through afterwards", async () => {
    await alice.send("still fine");
    expect((await f.deliver(bob)).map((r) => r.kind)).toEqual(["application"]);
  });
});
