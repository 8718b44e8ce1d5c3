// The one request-size limit of the server (`serve --max-request-bytes`): a
// DSRequest (or any other RPC request) larger than it is refused with the DS
// error `too_large` (RPC status ResourceExhausted, the DSResponse attached as
// DSErrorDetail), whatever protocol carried it and however early the size is
// known. The limit is on the DS bytes (SubmitRequest.ds_request); the request
// body may be larger by the envelope's overhead (protobuf tag and length,
// gRPC's 5-byte frame header) or by base64 in Connect's JSON, so the body
// bound below scales with the encoding and Submit checks the exact limit.
//
// connect-es checks its own readMaxBytes before our code runs, and answers
// without a DSErrorDetail; so the guard sits under connect, on the request
// body: it reads the declared sizes (Content-Length, gRPC frame headers) and
// counts the bytes, and throws the too_large ConnectError from the body
// iterator, which connect then writes in the caller's protocol. connect's own
// readMaxBytes is set above the guard's bounds and never fires first.
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import { DSErrorDetailSchema } from "../../gen/mimi/ds/v1/hub_pb.js";
import { DEFAULT_LIMITS, DSErrorCode, dsErrorResponse, encodeDSResponse } from "../wire/index.js";

/** Default and largest accepted `--max-request-bytes`: the wire layer's own DecodeLimits.maxMessageSize. */
export const defaultMaxRequestBytes = DEFAULT_LIMITS.maxMessageSize;
export const maxMaxRequestBytes = DEFAULT_LIMITS.maxMessageSize;
/** Smallest accepted limit: below it not even a small group's commit fits. */
export const minMaxRequestBytes = 64 * 1024;

export class RequestLimitError extends Error {
  override readonly name = "RequestLimitError";
}

/** The limit, if it is a whole number of bytes in [minMaxRequestBytes, maxMaxRequestBytes]. */
export function checkedMaxRequestBytes(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < minMaxRequestBytes || limit > maxMaxRequestBytes) {
    throw new RequestLimitError(
      `--max-request-bytes must be a whole number of bytes from ${minMaxRequestBytes} to ${maxMaxRequestBytes} (16 MiB, the wire layer's decode limit), got ${limit}`,
    );
  }
  return limit;
}

/** Room for the protobuf field header and everything but the DS bytes in a binary request message. */
const binaryOverhead = 64;
/** Room for the JSON object around the base64 DS bytes (field names, other fields). */
const jsonOverhead = 4096;
/** gRPC / gRPC-Web / Connect-streaming frame header: flags byte and uint32 length. */
const envelopeHeader = 5;

/** The too_large answer: a ConnectError ResourceExhausted with the DS error attached. */
export function tooLarge(sizeText: string, limit: number): ConnectError {
  const message = `request of ${sizeText} exceeds this DS's limit of ${limit} bytes (serve --max-request-bytes)`;
  const dsResponse = encodeDSResponse(dsErrorResponse(DSErrorCode.too_large, message));
  return new ConnectError(message, Code.ResourceExhausted, undefined, [
    { desc: DSErrorDetailSchema, value: { dsResponse } },
  ]);
}

/** Largest RPC message (serialized, before enveloping) that can carry `limit` DS bytes in this encoding. */
export function messageBound(limit: number, json: boolean): number {
  return json ? 4 * Math.ceil(limit / 3) + jsonOverhead : limit + binaryOverhead;
}

/** connect's own readMaxBytes: above every bound of the guard, a backstop only. */
export function connectReadMaxBytes(limit: number): number {
  return messageBound(limit, true) + envelopeHeader + 1;
}

/**
 * The request with its body guarded. Content-Length is checked here and then
 * dropped from the headers connect sees (connect would otherwise compare it
 * with its readMaxBytes before reading, and answer without our detail).
 */
export function guardRequestSize(req: UniversalServerRequest, limit: number): UniversalServerRequest {
  const contentType = req.header.get("content-type") ?? "";
  const json = /json/i.test(contentType);
  const enveloped = /^application\/(grpc|connect\+)/i.test(contentType);
  const bound = messageBound(limit, json);
  const declared = req.header.get("content-length");
  const body = req.body;
  if (!isByteStream(body)) return req;
  const header = new Headers(req.header);
  header.delete("content-length");
  return { ...req, header, body: guarded(body, bound, limit, enveloped, declared) };
}

function isByteStream(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

async function* guarded(
  body: AsyncIterable<Uint8Array>,
  bound: number,
  limit: number,
  enveloped: boolean,
  declared: string | null,
): AsyncIterable<Uint8Array> {
  const bodyBound = enveloped ? Number.POSITIVE_INFINITY : bound;
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > (enveloped ? bound + envelopeHeader : bodyBound)) {
    throw tooLarge(`${declared} bytes (Content-Length)`, limit);
  }
  let total = 0;
  // Envelope scan: bytes still needed for the current frame header, or of its payload.
  const frameHeader = new Uint8Array(envelopeHeader);
  let headerFill = 0;
  let payloadLeft = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > bodyBound) throw tooLarge(`more than ${bound} bytes`, limit);
    if (enveloped) {
      let at = 0;
      while (at < chunk.byteLength) {
        if (payloadLeft > 0) {
          const take = Math.min(payloadLeft, chunk.byteLength - at);
          payloadLeft -= take;
          at += take;
          continue;
        }
        frameHeader[headerFill++] = chunk[at++]!;
        if (headerFill === envelopeHeader) {
          headerFill = 0;
          const length = new DataView(frameHeader.buffer).getUint32(1);
          if (length > bound) throw tooLarge(`${length} bytes (frame header)`, limit);
          payloadLeft = length;
        }
      }
    }
    yield chunk;
  }
}
