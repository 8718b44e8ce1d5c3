// A small, strict codec library for the TLS presentation language (RFC 8446 §3)
// with the MLS variable-size vector header (RFC 9420 §2.1.2).
//
// Strictness is the point: the DS signs, hashes and forwards these bytes, so
// every value has exactly one encoding. Decoding rejects truncated input,
// trailing bytes, non-minimal length headers, optional presence bytes other
// than 0/1, unknown enum values and anything larger than the configured limits.
// Errors carry the field path and the byte offset so a 400 can say where.

/** What went wrong while decoding. */
export type WireDecodeErrorKind = "truncated" | "trailing_bytes" | "oversized" | "malformed" | "unknown_enum";

export class WireDecodeError extends Error {
  override readonly name = "WireDecodeError";
  constructor(
    readonly kind: WireDecodeErrorKind,
    /** Field path, e.g. `DSRequest.request_body.add_clients_request.welcome_messages[1]`. */
    readonly path: string,
    /** Byte offset in the top-level input where the problem was found. */
    readonly offset: number,
    readonly detail: string,
  ) {
    super(`${kind} at ${path || "<root>"} (offset ${offset}): ${detail}`);
  }
}

/** Thrown when a value cannot be encoded (out of range, too long, ill-formed string). */
export class WireEncodeError extends Error {
  override readonly name = "WireEncodeError";
}

/** Resource limits applied while decoding untrusted bytes. */
export interface DecodeLimits {
  /** Maximum size of a whole top-level message, in bytes. */
  readonly maxMessageSize: number;
  /** Maximum byte length of any single variable-size vector. */
  readonly maxVectorLength: number;
}

export const DEFAULT_LIMITS: DecodeLimits = Object.freeze({
  maxMessageSize: 16 * 1024 * 1024,
  maxVectorLength: 16 * 1024 * 1024,
});

/** Largest length the MLS varint header can carry (30 bits; the 0b11 prefix is invalid). */
export const MAX_VARINT = 0x3fffffff;

// ---------------------------------------------------------------- Encoder

/** Growable output buffer. */
export class Encoder {
  private buf: Uint8Array;
  private len = 0;

  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(Math.max(16, initialCapacity));
  }

  get length(): number {
    return this.len;
  }

  private ensure(n: number): void {
    const need = this.len + n;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  uint8(v: number): void {
    checkUint(v, 0xff, "uint8");
    this.ensure(1);
    this.buf[this.len++] = v;
  }

  uint16(v: number): void {
    checkUint(v, 0xffff, "uint16");
    this.ensure(2);
    this.buf[this.len++] = v >>> 8;
    this.buf[this.len++] = v & 0xff;
  }

  uint32(v: number): void {
    checkUint(v, 0xffffffff, "uint32");
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setUint32(this.len, v);
    this.len += 4;
  }

  uint64(v: bigint): void {
    if (typeof v !== "bigint" || v < 0n || v > 0xffffffffffffffffn) {
      throw new WireEncodeError(`uint64 out of range: ${String(v)}`);
    }
    this.ensure(8);
    new DataView(this.buf.buffer, this.buf.byteOffset).setBigUint64(this.len, v);
    this.len += 8;
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** Minimal MLS varint (RFC 9420 §2.1.2). */
  varint(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > MAX_VARINT) {
      throw new WireEncodeError(`vector length out of range: ${n}`);
    }
    if (n < 0x40) this.uint8(n);
    else if (n < 0x4000) this.uint16(n | 0x4000);
    else this.uint32((n | 0x80000000) >>> 0);
  }

  /**
   * Writes `<V>`-prefixed content produced by `body`. The content is written
   * first, then shifted right if its length needs more than a one-byte header.
   */
  vector(body: () => void): void {
    const start = this.len;
    this.ensure(1);
    this.len += 1; // optimistic one-byte header
    body();
    const contentLen = this.len - start - 1;
    const headerLen = contentLen < 0x40 ? 1 : contentLen < 0x4000 ? 2 : 4;
    if (contentLen > MAX_VARINT) throw new WireEncodeError(`vector too long: ${contentLen}`);
    if (headerLen > 1) {
      this.ensure(headerLen - 1);
      this.buf.copyWithin(start + headerLen, start + 1, this.len);
      this.len += headerLen - 1;
    }
    const end = this.len;
    this.len = start;
    this.varint(contentLen);
    this.len = end;
  }

  /** Writes RFC 8446 `<0..255>`-style content: a one-byte length prefix. */
  vector8(body: () => void): void {
    const start = this.len;
    this.ensure(1);
    this.len += 1;
    body();
    const contentLen = this.len - start - 1;
    if (contentLen > 0xff) throw new WireEncodeError(`<0..255> vector too long: ${contentLen}`);
    this.buf[start] = contentLen;
  }

  /** A copy of the bytes written so far. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new WireEncodeError(`${what} out of range: ${v}`);
}

// ---------------------------------------------------------------- Decoder

/** Reads from a byte array with a moving offset, a bound and a field path. */
export class Decoder {
  /** Absolute read position. */
  offset = 0;
  /** Absolute end of the region currently being decoded (a vector body, or the input). */
  private end: number;
  private readonly path: string[];

  constructor(
    readonly input: Uint8Array,
    root: string,
    readonly limits: DecodeLimits = DEFAULT_LIMITS,
  ) {
    this.end = input.length;
    this.path = root ? [root] : [];
  }

  /** Bytes left in the current region. */
  get remaining(): number {
    return this.end - this.offset;
  }

  /** The current region's end (absolute). */
  get bound(): number {
    return this.end;
  }

  pathString(): string {
    return this.path.join("");
  }

  fail(kind: WireDecodeErrorKind, detail: string, at = this.offset): never {
    throw new WireDecodeError(kind, this.pathString(), at, detail);
  }

  /** Decodes `codec` as the named field, so errors inside name it. */
  field<T>(name: string, codec: Codec<T>): T {
    this.path.push(this.path.length === 0 ? name : `.${name}`);
    try {
      return codec.decode(this);
    } finally {
      this.path.pop();
    }
  }

  /** Runs `fn` with `[i]` appended to the path. */
  index<T>(i: number, fn: () => T): T {
    this.path.push(`[${i}]`);
    try {
      return fn();
    } finally {
      this.path.pop();
    }
  }

  private need(n: number): void {
    if (this.end - this.offset >= n) return;
    // Running off the whole input is truncation; running off an enclosing
    // vector body means the inner lengths contradict the outer one.
    if (this.end === this.input.length) {
      this.fail("truncated", `need ${n} byte(s), ${this.end - this.offset} left`);
    }
    this.fail("malformed", `need ${n} byte(s) but the enclosing vector has ${this.end - this.offset} left`);
  }

  uint8(): number {
    this.need(1);
    return this.input[this.offset++]!;
  }

  uint16(): number {
    this.need(2);
    const v = (this.input[this.offset]! << 8) | this.input[this.offset + 1]!;
    this.offset += 2;
    return v;
  }

  uint32(): number {
    this.need(4);
    const v = new DataView(this.input.buffer, this.input.byteOffset, this.input.byteLength).getUint32(this.offset);
    this.offset += 4;
    return v;
  }

  uint64(): bigint {
    this.need(8);
    const v = new DataView(this.input.buffer, this.input.byteOffset, this.input.byteLength).getBigUint64(this.offset);
    this.offset += 8;
    return v;
  }

  /** A copy of the next `n` bytes (values never alias the input). */
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.input.slice(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  /** Advances past `n` bytes already validated by someone else. */
  skip(n: number): void {
    this.need(n);
    this.offset += n;
  }

  /** A view (no copy) of the rest of the current region, for foreign decoders. */
  view(): Uint8Array {
    return this.input.subarray(0, this.end);
  }

  /** Minimal MLS varint (RFC 9420 §2.1.2). */
  varint(): number {
    const at = this.offset;
    const first = this.uint8();
    const prefix = first >> 6;
    if (prefix === 3) this.fail("malformed", "varint with 0b11 prefix (8-byte lengths are not allowed)", at);
    if (prefix === 0) return first;
    if (prefix === 1) {
      const v = ((first & 0x3f) << 8) | this.uint8();
      if (v < 0x40) this.fail("malformed", `non-minimal varint: ${v} in 2 bytes`, at);
      return v;
    }
    this.need(3);
    const v =
      (first & 0x3f) * 0x1000000 +
      ((this.input[this.offset]! << 16) | (this.input[this.offset + 1]! << 8) | this.input[this.offset + 2]!);
    this.offset += 3;
    if (v < 0x4000) this.fail("malformed", `non-minimal varint: ${v} in 4 bytes`, at);
    return v;
  }

  /** Runs `body` over exactly `len` bytes; it must consume all of them. */
  within<T>(len: number, body: () => T, headerAt: number): T {
    if (len > this.limits.maxVectorLength) {
      this.fail("oversized", `vector of ${len} bytes exceeds the limit of ${this.limits.maxVectorLength}`, headerAt);
    }
    this.need(len);
    const savedEnd = this.end;
    this.end = this.offset + len;
    try {
      const v = body();
      if (this.offset !== this.end) {
        this.fail("malformed", `${this.end - this.offset} byte(s) left over inside the vector`);
      }
      return v;
    } finally {
      this.end = savedEnd;
    }
  }

  /** Reads a `<V>` header and runs `body` over its content. */
  vector<T>(body: () => T): T {
    const at = this.offset;
    const len = this.varint();
    return this.within(len, body, at);
  }

  /** Reads a one-byte (`<0..255>`) header and runs `body` over its content. */
  vector8<T>(body: () => T): T {
    const at = this.offset;
    const len = this.uint8();
    return this.within(len, body, at);
  }

  /** Fails with trailing_bytes unless everything was consumed. */
  expectEnd(): void {
    if (this.offset !== this.input.length) {
      this.fail("trailing_bytes", `${this.input.length - this.offset} unexpected byte(s) after the message`);
    }
  }
}

// ---------------------------------------------------------------- Codec

/** An encoder and a decoder for one presentation-language type. */
export interface Codec<T> {
  encode(enc: Encoder, value: T): void;
  decode(dec: Decoder): T;
}

/** Encodes a whole value to bytes. */
export function encodeWith<T>(codec: Codec<T>, value: T): Uint8Array {
  const enc = new Encoder();
  codec.encode(enc, value);
  return enc.finish();
}

/** Decodes a whole top-level message: limits checked, trailing bytes rejected. */
export function decodeWith<T>(codec: Codec<T>, bytes: Uint8Array, root: string, limits?: Partial<DecodeLimits>): T {
  const lim: DecodeLimits = { ...DEFAULT_LIMITS, ...limits };
  if (bytes.length > lim.maxMessageSize) {
    throw new WireDecodeError(
      "oversized",
      root,
      0,
      `message of ${bytes.length} bytes exceeds the limit of ${lim.maxMessageSize}`,
    );
  }
  const dec = new Decoder(bytes, root, lim);
  const v = codec.decode(dec);
  dec.expectEnd();
  return v;
}

// ---------------------------------------------------------------- primitives

export const uint8: Codec<number> = { encode: (e, v) => e.uint8(v), decode: (d) => d.uint8() };
export const uint16: Codec<number> = { encode: (e, v) => e.uint16(v), decode: (d) => d.uint16() };
export const uint32: Codec<number> = { encode: (e, v) => e.uint32(v), decode: (d) => d.uint32() };
export const uint64: Codec<bigint> = { encode: (e, v) => e.uint64(v), decode: (d) => d.uint64() };

/** `opaque data<V>`. */
export const opaqueV: Codec<Uint8Array> = {
  encode: (e, v) => e.vector(() => e.bytes(v)),
  decode: (d) => d.vector(() => d.bytes(d.remaining)),
};

/** `opaque data<0..255>` (RFC 8446 one-byte length prefix). */
export const opaque8: Codec<Uint8Array> = {
  encode: (e, v) => e.vector8(() => e.bytes(v)),
  decode: (d) => d.vector8(() => d.bytes(d.remaining)),
};

/** `opaque data[n]`. */
export function opaqueFixed(n: number): Codec<Uint8Array> {
  return {
    encode: (e, v) => {
      if (v.length !== n) throw new WireEncodeError(`fixed opaque[${n}] given ${v.length} bytes`);
      e.bytes(v);
    },
    decode: (d) => d.bytes(n),
  };
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();
// TextEncoder would silently turn a lone surrogate into U+FFFD; refuse instead.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** `opaque text<V>` holding UTF-8; ill-formed UTF-8 is malformed. */
export const utf8V: Codec<string> = {
  encode: (e, v) => {
    if (LONE_SURROGATE.test(v)) throw new WireEncodeError("string is not well-formed UTF-16 (lone surrogate)");
    opaqueV.encode(e, utf8Encoder.encode(v));
  },
  decode: (d) => {
    const at = d.offset;
    const b = opaqueV.decode(d);
    try {
      return utf8Decoder.decode(b);
    } catch {
      return d.fail("malformed", "invalid UTF-8", at);
    }
  },
};

/** `T items<V>`. */
export function vectorV<T>(item: Codec<T>): Codec<readonly T[]> {
  return {
    encode: (e, vs) => e.vector(() => vs.forEach((v) => item.encode(e, v))),
    decode: (d) =>
      d.vector(() => {
        const out: T[] = [];
        while (d.remaining > 0) {
          const before = d.offset;
          out.push(d.index(out.length, () => item.decode(d)));
          // A zero-size element would loop forever.
          if (d.offset === before) d.fail("malformed", "vector element of zero size");
        }
        return out;
      }),
  };
}

/** `optional<T>`: presence byte 0 or 1 (anything else is malformed). */
export function optional<T>(item: Codec<T>): Codec<T | undefined> {
  return {
    encode: (e, v) => {
      if (v === undefined) e.uint8(0);
      else {
        e.uint8(1);
        item.encode(e, v);
      }
    },
    decode: (d) => {
      const at = d.offset;
      const p = d.uint8();
      if (p === 0) return undefined;
      if (p !== 1) d.fail("malformed", `optional presence byte must be 0 or 1, got ${p}`, at);
      return item.decode(d);
    },
  };
}

/** `struct {}`. */
export const empty: Codec<Record<string, never>> = {
  encode: () => {},
  decode: () => ({}),
};

/**
 * A closed enum on a uint8 or uint16: names on the TS side, numbers on the wire.
 * Unknown numbers fail with unknown_enum.
 */
export function enumCodec<N extends string>(
  typeName: string,
  width: 8 | 16,
  values: Readonly<Record<N, number>>,
): Codec<N> {
  const byNumber = new Map<number, N>();
  for (const [k, v] of Object.entries(values) as [N, number][]) byNumber.set(v, k);
  const base = width === 8 ? uint8 : uint16;
  return {
    encode: (e, v) => {
      const n = values[v];
      if (n === undefined) throw new WireEncodeError(`unknown ${typeName} ${String(v)}`);
      base.encode(e, n);
    },
    decode: (d) => {
      const at = d.offset;
      const n = base.decode(d);
      const name = byNumber.get(n);
      if (name === undefined) return d.fail("unknown_enum", `unknown ${typeName} ${n}`, at);
      return name;
    },
  };
}

/** Maps a codec's value type (both directions). */
export function mapCodec<A, B>(c: Codec<A>, to: (a: A) => B, from: (b: B) => A): Codec<B> {
  return { encode: (e, v) => c.encode(e, from(v)), decode: (d) => to(c.decode(d)) };
}

/** One struct field: wire name (for error paths), TS key, codec. */
export type Field<T> = { [K in keyof T]-?: readonly [wire: string, key: K, codec: Codec<T[K]>] }[keyof T];

/**
 * A struct of fields in wire order. Decoded fields whose value is undefined
 * (an absent optional) are left out of the object.
 */
export function struct<T extends object>(fields: readonly Field<T>[]): Codec<T> {
  return {
    encode: (e, v) => {
      for (const [, key, codec] of fields) codec.encode(e, v[key]);
    },
    decode: (d) => {
      const out: Partial<T> = {};
      for (const [wire, key, codec] of fields) {
        const x = d.field(wire, codec);
        if (x !== undefined) out[key] = x;
      }
      return out as T;
    },
  };
}

/**
 * `struct { Tag tag; select (tag) { case a: A; ... } }` as a TS discriminated
 * union on `tag`. Each case codec handles the variant's other fields.
 */
export function variant<U extends { readonly [k in Tag]: string }, Tag extends keyof U & string>(
  tag: Tag,
  wireTag: string,
  tagCodec: Codec<U[Tag]>,
  cases: { readonly [N in U[Tag]]: Codec<Omit<Extract<U, { readonly [k in Tag]: N }>, Tag>> },
): Codec<U> {
  return {
    encode: (e, v) => {
      const t = v[tag];
      tagCodec.encode(e, t);
      const c = cases[t] as Codec<unknown>;
      c.encode(e, v);
    },
    decode: (d) => {
      const t = d.field(wireTag, tagCodec);
      const c = cases[t] as Codec<object>;
      return { [tag]: t, ...c.decode(d) } as unknown as U;
    },
  };
}
