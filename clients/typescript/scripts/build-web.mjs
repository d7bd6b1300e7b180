// Bundle the web page's script (web/main.ts and the client it imports) into the Python package,
// beside the page's HTML and CSS (written there by hand, nothing to build), where the daemon
// serves it: pip and `make serve` need no Node. `--check` fails when the script in the package
// differs from a fresh build (run by the TypeScript test tier).
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(here, "..", "..", "src", "abstractruntime", "web", "static");
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [join(here, "web", "main.ts")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2020",
  minify: true,
  legalComments: "none",
  write: false,
  logLevel: "warning",
});
const files = { "app.js": Buffer.from(result.outputFiles[0].contents) };
let stale = [];
for (const [name, body] of Object.entries(files)) {
  const path = join(out, name);
  if (check) {
    let old = null;
    try {
      old = readFileSync(path);
    } catch {}
    if (!old || !old.equals(body)) stale.push(name);
  } else {
    writeFileSync(path, body);
  }
}
if (stale.length) {
  console.error(`the web page in the package is stale (${stale.join(", ")}): run \`npm run build:web\` in clients/typescript`);
  process.exit(1);
}
if (!check) console.log(`wrote ${Object.keys(files).join(", ")} to ${out}`);
