// Parse AsyncAPI documents with the official parser (@asyncapi/parser) and print its
// diagnostics as JSON: {"<file>": [{"severity": 0, "code": ..., "message": ..., "path": [...]}]}.
// Severity 0 is an error, 1 a warning, 2 information, 3 a hint.
// Usage: node validate.cjs <node_modules dir> <document.json>...
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const load = createRequire(path.join(path.resolve(modules), "noop.js"));
  const { Parser } = load("@asyncapi/parser");
  const parser = new Parser();
  const report = {};
  for (const file of files) {
    const { diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"));
    report[file] = diagnostics.map((d) => ({
      severity: d.severity,
      code: d.code,
      message: d.message,
      path: d.path,
    }));
  }
  process.stdout.write(JSON.stringify(report));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(2);
});
