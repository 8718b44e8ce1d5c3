// Issue 13 item 1 against a real `serve`: large messages queued for a client,
// then Receive streams of that client that never read. Before the fix each
// stream read a page of 64 entries whatever their size and held it (40 x 5 MiB
// and 4 streams: RSS 263 -> 1,193 MiB). Now a page is bounded by bytes, the
// next page is read only once the previous entry was written out (HTTP/2 flow
// control), and a client has at most 4 Receive streams (a newer one ends the
// oldest). The assertions are on the server's own accounting (each stream's
// peak buffered bytes and entries handed to the transport, from its log) and
// on the refusals; RSS is printed for the record, not asserted.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReceiveRequestSchema } from "../../gen/mimi/ds/v1/client_pb.js";
import { closed, grpcFrame, grpcStream, h2session, rssMiB } from "../helpers/h2probe.js";
import { Federation } from "./harness.js";

const A = "a.example";
const MESSAGES = 24;
const MESSAGE_BYTES = 2 * 1024 * 1024;
/** DEFAULT_PAGE_BYTES of queue-stream.ts. */
const PAGE_BYTES = 1024 * 1024;
const STREAMS = 6;
const PER_CLIENT = 4;

let fed: Federation;
beforeAll(async () => {
  // 2 MiB messages: above the default application-message limit (1 MiB), raised here on purpose.
  // Six stalled streams of one connection each leave a 2 MiB entry in the server's send buffer:
  // more than the default HTTP/2 session budget (10 MB), at which point HTTP/2 itself refuses
  // new streams of that connection. The budget is raised so that the per-client limit is what
  // this test sees.
  fed = await Federation.start([A], ["--log-level", "debug", "--max-message-bytes", "4M", "--max-session-memory", "64"]);
});
afterAll(() => fed?.close());

describe("stalled Receive streams (item 1)", () => {
  it("hold at most one entry each, never read further, and only 4 per client stay open", async () => {
    const alice = await fed.client("alice", A);
    const victim = await fed.client("victim", A);
    await alice.member.createGroup(await fed.hubSender(A));
    await alice.member.addClients([victim.id]);
    expect((await victim.process(1))[0]!.kind).toBe("joined");
    await victim.stop(); // its own inbox stream ends; the queue fills from now on

    const payload = new Uint8Array(MESSAGE_BYTES).fill(7);
    for (let i = 0; i < MESSAGES; i++) await alice.member.send(payload);
    const server = fed.server(A);
    const pid = server.child.pid!;
    const before = await rssMiB(pid);

    const from = server.lines.length;
    const session = await h2session(server.port, { ca: fed.ca.ca });
    const streams = [];
    for (let i = 0; i < STREAMS; i++) {
      const auth = await victim.member.local!.auth({ method: "receive", resumeAfter: 0n });
      streams.push(grpcStream(session, "/mimi.ds.v1.ClientService/Receive", grpcFrame(ReceiveRequestSchema, { auth, resumeAfter: 0n })));
      // One at a time, so that "oldest" is well defined.
      await new Promise((r) => setTimeout(r, 300));
    }
    // The two oldest streams are superseded; stuck in a write, they are reset by the server (CANCEL = 8).
    const codes = await Promise.all(streams.slice(0, STREAMS - PER_CLIENT).map(closed));
    expect(codes).toEqual(Array(STREAMS - PER_CLIENT).fill(8));
    await new Promise((r) => setTimeout(r, 2_000)); // let the others stall
    const during = await rssMiB(pid);
    expect(streams.slice(STREAMS - PER_CLIENT).every((s) => !s.closed)).toBe(true);

    session.destroy();
    const ended = async () => server.lines.slice(from).filter((l) => l.msg === "receive stream ended");
    for (let i = 0; i < 200 && (await ended()).length < STREAMS; i++) await new Promise((r) => setTimeout(r, 50));
    const lines = await ended();
    expect(lines.length).toBe(STREAMS);
    // Each stream held one entry (a page is one entry when entries exceed the page's byte bound) ...
    const entryBytes = MESSAGE_BYTES + 1024; // the MLS framing around the payload
    for (const l of lines) {
      expect(l.peakBufferedBytes as number).toBeGreaterThan(PAGE_BYTES);
      expect(l.peakBufferedBytes as number).toBeLessThanOrEqual(entryBytes);
      // ... and handed the transport one entry, which the peer never read: no second page was read.
      expect(l.delivered as number).toBeLessThanOrEqual(1);
    }
    console.log(
      `stalled Receive: ${MESSAGES} x ${MESSAGE_BYTES / 1024 / 1024} MiB queued, ${STREAMS} streams opened (${PER_CLIENT} kept): ` +
        `server RSS ${before} MiB before, ${during} MiB while stalled; peak per stream ${Math.max(...lines.map((l) => l.peakBufferedBytes as number))} bytes`,
    );
  });
});
