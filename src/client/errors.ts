// Errors of the client SDK. A DS-level refusal is a DSRequestError whether it
// arrived as a DSResponse of type error or as a failed RPC carrying the
// DSResponse in a mimi.ds.v1.DSErrorDetail.
import { Code, ConnectError } from "@connectrpc/connect";
import { DSErrorDetailSchema } from "../../gen/mimi/ds/v1/hub_pb.js";
import {
  type DSError,
  type DSResponse,
  type DSResponseTypeName,
  WireDecodeError,
  decodeDSResponse,
  dsErrorCodeName,
} from "../wire/index.js";

/** The DS refused a request: its DSError, and the RPC status when it came as a failed RPC. */
export class DSRequestError extends Error {
  override readonly name = "DSRequestError";
  /** DSErrorCode number (unknown codes are kept). */
  readonly code: number;
  /** The code's name (`wrong_epoch`, ...), or `unknown(<n>)`. */
  readonly codeName: string;
  /** The DS's own sentence. */
  readonly dsMessage: string;
  /** The group's current epoch, for wrong_epoch. */
  readonly currentEpoch?: bigint;
  /** The RPC status, when the error arrived as a failed RPC. */
  readonly rpcCode?: Code;

  constructor(error: DSError, rpcCode?: Code) {
    const codeName = dsErrorCodeName(error.code) ?? `unknown(${error.code})`;
    const epoch = error.currentEpoch !== undefined ? ` (current epoch ${error.currentEpoch})` : "";
    super(`${codeName}: ${error.message}${epoch}`);
    this.code = error.code;
    this.codeName = codeName;
    this.dsMessage = error.message;
    if (error.currentEpoch !== undefined) this.currentEpoch = error.currentEpoch;
    if (rpcCode !== undefined) this.rpcCode = rpcCode;
  }

  /**
   * The DSRequestError inside a ConnectError's DSErrorDetail, or undefined when
   * it has none (transport failures, deadlines: those stay ConnectErrors). A
   * detail that does not decode is reported as such, not swallowed.
   */
  static fromConnectError(err: ConnectError): DSRequestError | undefined {
    const details = err.findDetails(DSErrorDetailSchema);
    const detail = details[0];
    if (detail === undefined) return undefined;
    let response: DSResponse;
    try {
      response = decodeDSResponse(detail.dsResponse);
    } catch (e) {
      if (e instanceof WireDecodeError) throw new UnexpectedResponseError(`undecodable DSErrorDetail: ${e.message}`);
      throw e;
    }
    if (response.responseBody.responseType !== "error") {
      throw new UnexpectedResponseError(
        `DSErrorDetail carries a DSResponse of type ${response.responseBody.responseType}, not error`,
      );
    }
    return new DSRequestError(response.responseBody.error, err.code);
  }
}

/** The DS answered something this client cannot use (wrong response type, undecodable bytes). */
export class UnexpectedResponseError extends Error {
  override readonly name = "UnexpectedResponseError";
  constructor(
    message: string,
    readonly expected?: DSResponseTypeName,
    readonly received?: DSResponseTypeName,
  ) {
    super(message);
  }
}

/** A ConnectError turned into a DSRequestError when it carries a DS error; anything else unchanged. */
export function toDSError(err: unknown): unknown {
  if (err instanceof ConnectError) return DSRequestError.fromConnectError(err) ?? err;
  return err;
}
