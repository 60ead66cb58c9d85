// Parses an AsyncAPI document with the official parser (the one behind `asyncapi validate`) and prints
// its diagnostics as JSON: [{severity, code, message, path}], severity 0 error, 1 warning, 2 info, 3 hint.
import fs from "node:fs";
import { Parser } from "@asyncapi/parser";

const { document, diagnostics } = await new Parser().parse(fs.readFileSync(process.argv[2], "utf8"));
const found = diagnostics.map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
console.log(JSON.stringify({ parsed: document !== undefined, diagnostics: found }));
