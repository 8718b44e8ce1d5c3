// Types of apply-patches.mjs (plain JavaScript: it runs at install time, before anything is built).
export declare class PatchError extends Error {}
export interface PatchHunk {
  readonly oldStart: number;
  readonly newStart: number;
  readonly oldLines: readonly string[];
  readonly newLines: readonly string[];
}
export interface FilePatch {
  readonly path: string;
  readonly create: boolean;
  readonly remove: boolean;
  readonly hunks: readonly PatchHunk[];
}
export declare function packageOfPatchFile(file: string): { name: string; version: string };
export declare function parsePatch(text: string): FilePatch[];
export declare function patchFile(current: string | undefined, file: FilePatch): { content: string | undefined; already: boolean };
export declare function unpatchFile(current: string, file: FilePatch): string | undefined;
export declare function applyPatches(root: string): string[];
