// docs/clients.md's worked example is the real thing: its hex is what the
// SDK encodes for that request, its table adds up to those bytes, and the
// error bytes it shows decode to what it says.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { expect, it } from "vitest";
import { SubmitRequestSchema } from "../../gen/mimi/ds/v1/hub_pb.js";
import { anonymous, buildDSRequest } from "../../src/client/index.js";
import { DSErrorCode, decodeDSRequest, decodeDSResponse, encodeDSRequest } from "../../src/wire/index.js";

const doc = await readFile(join(process.cwd(), "docs/clients.md"), "utf8");

it("the worked DSRequest is encodeDSRequest's output, and its table spells the same bytes", async () => {
  const hex = /<!-- worked-example[^>]*-->\s*```hex\s*([0-9a-f]+)\s*```/.exec(doc)?.[1];
  expect(hex).toBeDefined();
  const request = await buildDSRequest(
    { requestType: "key_packages", keyPackagesRequest: { clientIdentifiers: [new TextEncoder().encode("alice:1@localhost")], cipherSuites: [1] } },
    anonymous,
  );
  const bytes = encodeDSRequest(request);
  expect(Buffer.from(bytes).toString("hex")).toBe(hex);
  expect(decodeDSRequest(bytes).requestBody.requestType).toBe("key_packages");

  const section = doc.slice(doc.indexOf("## One DSRequest, byte by byte"), doc.indexOf("## Browsers"));
  const tableBytes = [...section.matchAll(/^\| `([0-9a-f ]+)` \|/gm)].map((m) => m[1]!.replaceAll(" ", "")).join("");
  expect(tableBytes).toBe(hex);
  expect(section).toContain(`${bytes.length} bytes`);
  // The envelopes quoted after the table.
  const submit = toBinary(SubmitRequestSchema, create(SubmitRequestSchema, { dsRequest: bytes }));
  expect(Buffer.from(submit.subarray(0, 2)).toString("hex")).toBe("0a1a");
  expect(section).toContain(`{"dsRequest":"${Buffer.from(bytes).toString("base64")}"}`);
  expect(section).toContain(`00 00 00 00 ${submit.length.toString(16)}`);
});

it("the error bytes shown decode to unknown_client with the sentence shown", () => {
  const json = /"value":"([A-Za-z0-9+/=]+)"/.exec(doc)?.[1];
  expect(json).toBeDefined();
  // DSErrorDetail { bytes ds_response = 1 }: tag 0x0a, length, then the DSResponse.
  const detail = Buffer.from(json!, "base64");
  expect(detail[0]).toBe(0x0a);
  const dsResponse = detail.subarray(2, 2 + detail[1]!);
  expect(dsResponse.length).toBe(61);
  const res = decodeDSResponse(dsResponse);
  expect(res.responseBody.responseType).toBe("error");
  if (res.responseBody.responseType !== "error") return;
  expect(res.responseBody.error.code).toBe(DSErrorCode.unknown_client);
  expect(doc).toContain(res.responseBody.error.message);
});
