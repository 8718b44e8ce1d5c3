// The browser side of test/browser/browser.test.ts: bundled with esbuild at
// test time and loaded by a page on another origin than the DS. It uses only
// what a web app would: @connectrpc/connect-web and the SDK's wire and DS
// client layers (no Node APIs), and reports what it saw as plain JSON.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { DSErrorDetailSchema, HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { DSClient } from "../../src/client/ds.js";
import { DSRequestError } from "../../src/client/errors.js";
import { decodeDSResponse, dsErrorCodeName } from "../../src/wire/index.js";

export type BrowserProtocol = "connect" | "connect-json" | "grpc-web";

export interface ScenarioResult {
  readonly origin: string;
  readonly domain: string;
  /** request_group_id through Submit: the reserved group id, as text. */
  readonly groupId: string;
  /** Raw Submit of bytes that are no DSRequest: the RPC error and the decoded DSErrorDetail. */
  readonly raw: { readonly rpcCode: string; readonly detailCode: string; readonly detailMessage: string };
  /** external_commit_info for a group that does not exist, through DSClient. */
  readonly dsError: { readonly codeName: string; readonly rpcCode: string; readonly message: string };
}

function transportFor(baseUrl: string, protocol: BrowserProtocol) {
  switch (protocol) {
    case "connect":
      return createConnectTransport({ baseUrl, useBinaryFormat: true });
    case "connect-json":
      return createConnectTransport({ baseUrl, useBinaryFormat: false });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl });
  }
}

// No DOM lib in this project's tsconfig (it is Node code): reach the page's globals untyped.
const page = globalThis as unknown as { mimi: unknown; location: { origin: string }; document: { title: string } };

async function scenario(baseUrl: string, protocol: BrowserProtocol): Promise<ScenarioResult> {
  const transport = transportFor(baseUrl, protocol);
  const hub = createClient(HubService, transport);
  const ds = new DSClient(transport);

  const domain = (await hub.ping({})).domain;
  const groupId = new TextDecoder().decode(await ds.requestGroupId());

  let raw: ScenarioResult["raw"] | undefined;
  try {
    await hub.submit({ dsRequest: new Uint8Array([0, 1, 0xee, 0xee]) });
  } catch (err) {
    const ce = ConnectError.from(err);
    const detail = ce.findDetails(DSErrorDetailSchema)[0];
    if (detail === undefined) throw new Error(`no DSErrorDetail on ${ce.message}`);
    const body = decodeDSResponse(detail.dsResponse).responseBody;
    if (body.responseType !== "error") throw new Error(`DSErrorDetail of type ${body.responseType}`);
    raw = { rpcCode: Code[ce.code], detailCode: dsErrorCodeName(body.error.code) ?? String(body.error.code), detailMessage: body.error.message };
  }
  if (raw === undefined) throw new Error("garbage Submit succeeded");

  let dsError: ScenarioResult["dsError"] | undefined;
  try {
    await ds.externalCommitInfo(new TextEncoder().encode(`no-such-group@${domain}`));
  } catch (err) {
    if (!(err instanceof DSRequestError)) throw err;
    dsError = { codeName: err.codeName, rpcCode: err.rpcCode === undefined ? "none" : Code[err.rpcCode], message: err.dsMessage };
  }
  if (dsError === undefined) throw new Error("external_commit_info for an unknown group succeeded");
  return { origin: page.location.origin, domain, groupId, raw, dsError };
}

/** What a page from a disallowed origin gets: the browser withholds the answer. */
async function blocked(baseUrl: string, protocol: BrowserProtocol): Promise<string> {
  try {
    await createClient(HubService, transportFor(baseUrl, protocol)).ping({});
    return "answered";
  } catch (err) {
    return `${Code[ConnectError.from(err).code]}: ${ConnectError.from(err).rawMessage}`;
  }
}

page.mimi = { scenario, blocked };
page.document.title = "ready";
