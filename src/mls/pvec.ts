// Small persistent data structures so a staged commit never disturbs the
// state it came from: a chunked copy-on-write vector and a sharded
// copy-on-write map. Editing copies the top table (N/64 or 256 pointers) and
// only the chunks / shards that change, so a commit costs O(changes), not O(N).

const CHUNK_BITS = 6;
const CHUNK = 1 << CHUNK_BITS;
const MASK = CHUNK - 1;

/** Immutable vector of T (holes are undefined). */
export class PVec<T> {
  private constructor(
    readonly chunks: readonly (readonly (T | undefined)[])[],
    readonly length: number,
  ) {}
  static empty<T>(): PVec<T> {
    return new PVec<T>([], 0);
  }
  static from<T>(items: readonly (T | undefined)[]): PVec<T> {
    const chunks: (T | undefined)[][] = [];
    for (let i = 0; i < items.length; i += CHUNK) chunks.push(items.slice(i, i + CHUNK));
    return new PVec<T>(chunks, items.length);
  }
  get(i: number): T | undefined {
    if (i < 0 || i >= this.length) return undefined;
    return this.chunks[i >>> CHUNK_BITS]![i & MASK];
  }
  edit(): PVecEditor<T> {
    return new PVecEditor<T>(this);
  }
  toArray(): (T | undefined)[] {
    const out: (T | undefined)[] = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.get(i);
    return out;
  }
  /** @internal */
  static make<T>(chunks: (T | undefined)[][], length: number): PVec<T> {
    return new PVec<T>(chunks, length);
  }
}

/** Transient editor: copies a chunk on its first write. */
export class PVecEditor<T> {
  private chunks: (T | undefined)[][];
  /** owned[c]: chunk c is this editor's copy (a flag array: cheaper than a Set on every write). */
  private owned: boolean[] = [];
  length: number;
  constructor(base: PVec<T>) {
    this.chunks = base.chunks.slice() as (T | undefined)[][];
    this.length = base.length;
  }
  get(i: number): T | undefined {
    if (i < 0 || i >= this.length) return undefined;
    return this.chunks[i >>> CHUNK_BITS]![i & MASK];
  }
  private writable(c: number): (T | undefined)[] {
    if (this.owned[c] !== true) {
      const src = this.chunks[c];
      this.chunks[c] = src === undefined ? [] : src.slice();
      this.owned[c] = true;
    }
    return this.chunks[c]!;
  }
  set(i: number, v: T | undefined): void {
    if (i >= this.length) this.resize(i + 1);
    this.writable(i >>> CHUNK_BITS)[i & MASK] = v;
  }
  resize(n: number): void {
    if (n < this.length) {
      const lastChunk = n === 0 ? -1 : (n - 1) >>> CHUNK_BITS;
      this.chunks.length = lastChunk + 1;
      if (lastChunk >= 0) {
        const c = this.writable(lastChunk);
        c.length = n - (lastChunk << CHUNK_BITS);
      }
      if (this.owned.length > lastChunk + 1) this.owned.length = lastChunk + 1;
    } else {
      for (let i = this.length; i < n; i++) {
        const c = i >>> CHUNK_BITS;
        if (this.chunks[c] === undefined) {
          this.chunks[c] = [];
          this.owned[c] = true;
        }
        this.writable(c)[i & MASK] = undefined;
      }
    }
    this.length = n;
  }
  freeze(): PVec<T> {
    this.owned = []; // later writes copy again
    return PVec.make(this.chunks.slice(), this.length);
  }
}

const SHARDS = 256;
function shardOf(key: string): number {
  // FNV-1a over the whole key: client ids share long suffixes ("@domain"), keys are random.
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & (SHARDS - 1);
}

/** Immutable string-keyed map, sharded for cheap copy-on-write. */
export class PMap<V> {
  private constructor(
    readonly shards: readonly (ReadonlyMap<string, V> | undefined)[],
    readonly size: number,
  ) {}
  static empty<V>(): PMap<V> {
    return new PMap<V>(new Array(SHARDS).fill(undefined), 0);
  }
  get(key: string): V | undefined {
    return this.shards[shardOf(key)]?.get(key);
  }
  has(key: string): boolean {
    return this.shards[shardOf(key)]?.has(key) ?? false;
  }
  edit(): PMapEditor<V> {
    return new PMapEditor<V>(this);
  }
  *entries(): IterableIterator<[string, V]> {
    for (const s of this.shards) if (s !== undefined) yield* s.entries();
  }
  /** @internal */
  static make<V>(shards: (Map<string, V> | undefined)[], size: number): PMap<V> {
    return new PMap<V>(shards, size);
  }
}

export class PMapEditor<V> {
  private shards: (Map<string, V> | undefined)[];
  private owned = new Uint8Array(SHARDS);
  size: number;
  constructor(base: PMap<V>) {
    this.shards = base.shards.slice() as (Map<string, V> | undefined)[];
    this.size = base.size;
  }
  get(key: string): V | undefined {
    return this.shards[shardOf(key)]?.get(key);
  }
  has(key: string): boolean {
    return this.shards[shardOf(key)]?.has(key) ?? false;
  }
  private writable(s: number): Map<string, V> {
    if (this.owned[s] === 0) {
      const m = this.shards[s];
      this.shards[s] = m === undefined ? new Map() : new Map(m);
      this.owned[s] = 1;
    }
    return this.shards[s]!;
  }
  set(key: string, v: V): void {
    const m = this.writable(shardOf(key));
    if (!m.has(key)) this.size++;
    m.set(key, v);
  }
  /** Set key if absent (one shard lookup); false, and no change, if present. */
  add(key: string, v: V): boolean {
    const m = this.writable(shardOf(key));
    if (m.has(key)) return false;
    m.set(key, v);
    this.size++;
    return true;
  }
  delete(key: string): void {
    const s = shardOf(key);
    if (!(this.shards[s]?.has(key) ?? false)) return;
    this.writable(s).delete(key);
    this.size--;
  }
  freeze(): PMap<V> {
    this.owned = new Uint8Array(SHARDS);
    return PMap.make(this.shards.slice(), this.size);
  }
}
