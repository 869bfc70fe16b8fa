// Builds the tracker: dist/tracker.min.js (IIFE, global `WebAnalytics`, for a <script> tag),
// dist/tracker.mjs (ESM, for bundlers) and dist/tracker.d.ts (types), then measures the
// minified script gzipped and fails above the budget, so the size promise cannot slip unnoticed.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

/** The budget in the README: 4 KB minified and gzipped. */
const MAX_GZIP_BYTES = 4096;
const here = new URL(".", import.meta.url).pathname;
process.chdir(here);
rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");

// Type-check and emit the declarations in one pass (esbuild strips types without checking them).
try {
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], { stdio: "inherit" });
} catch {
  console.error("tracker: FAILED: the type check (tsc) found errors");
  process.exit(1);
}
copyFileSync("dist/types/index.d.ts", "dist/tracker.d.ts");
rmSync("dist/types", { recursive: true });

const common = { absWorkingDir: here, entryPoints: ["src/index.ts"], bundle: true, minify: true, target: "es2019", legalComments: "none" };
await esbuild.build({ ...common, format: "iife", globalName: "WebAnalytics", outfile: "dist/tracker.min.js" });
await esbuild.build({ ...common, format: "esm", outfile: "dist/tracker.mjs" });

const code = readFileSync("dist/tracker.min.js");
const gzip = gzipSync(code, { level: 9 }).length;
const size = { min_bytes: code.length, gzip_bytes: gzip, budget_gzip_bytes: MAX_GZIP_BYTES };
writeFileSync("dist/size.json", JSON.stringify(size) + "\n");
console.log(`tracker: dist/tracker.min.js ${code.length} B minified, ${gzip} B min+gzip (budget ${MAX_GZIP_BYTES} B)`);
if (gzip > MAX_GZIP_BYTES) {
  console.error(`tracker: FAILED: ${gzip} B min+gzip is over the ${MAX_GZIP_BYTES} B budget`);
  process.exit(1);
}
