import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    reporters: ["default", "./test/summary-reporter.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Server and crypto heavy suites: two cores, so keep workers modest.
    pool: "forks",
    maxWorkers: 2,
  },
});
