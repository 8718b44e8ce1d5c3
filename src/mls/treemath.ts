// RFC 9420 Appendix C array-based tree math on plain numbers.

export function level(x: number): number {
  if ((x & 1) === 0) return 0;
  let k = 0;
  while (((x >> k) & 1) === 1) k++;
  return k;
}
export const isLeafNode = (x: number): boolean => (x & 1) === 0;
export const leafToNode = (l: number): number => l * 2;
export const nodeToLeaf = (x: number): number => x >>> 1;
/** Number of nodes for a tree of `leaves` leaves (a power of two). */
export const nodeWidth = (leaves: number): number => (leaves === 0 ? 0 : 2 * (leaves - 1) + 1);
export function rootOf(leaves: number): number {
  const w = nodeWidth(leaves);
  return (1 << Math.floor(Math.log2(w))) - 1;
}
export function left(x: number): number {
  const k = level(x);
  return x ^ (1 << (k - 1));
}
export function right(x: number): number {
  const k = level(x);
  return x ^ (3 << (k - 1));
}
export function parentOf(x: number): number {
  const k = level(x);
  const b = (x >> (k + 1)) & 1;
  return (x | (1 << k)) ^ (b << (k + 1));
}
export function siblingOf(x: number): number {
  const p = parentOf(x);
  return x < p ? right(p) : left(p);
}
/** Direct path of node x (excluding x, including the root). */
export function directPath(x: number, leaves: number): number[] {
  const r = rootOf(leaves);
  const out: number[] = [];
  while (x !== r) {
    x = parentOf(x);
    out.push(x);
  }
  return out;
}
/** First and one-past-last leaf index covered by node x. */
export function leafRange(x: number): [number, number] {
  const k = level(x);
  const first = (x - ((1 << k) - 1)) >>> 1;
  return [first, first + (1 << k)];
}
/** Is node a an ancestor of (or equal to) node x? */
export function covers(a: number, x: number): boolean {
  const [s, e] = leafRange(a);
  const [xs, xe] = leafRange(x);
  return xs >= s && xe <= e;
}
/** Smallest power of two >= n (n >= 1). */
export function pow2AtLeast(n: number): number {
  let w = 1;
  while (w < n) w *= 2;
  return w;
}
