// Drives the official Web SDK (npm `appwrite`) in a real browser (Debian's Chromium through
// playwright-core) for a Python test, one command per line on stdin, one JSON answer per line
// on stdout:
//   {"op":"page","name":N}                       opens page N (its own browser context) on
//                                                http://localhost:<port>/, a page holding the
//                                                SDK's browser bundle (global `Appwrite`)
//   {"op":"eval","name":N,"body":B,"arg":A}      runs B as an async function body in page N
//                                                with `Appwrite`, `arg`, `client(endpoint)`
//                                                (a Client for PROJECT) and `attempt(p)` ({value}
//                                                or {error}); answers {"value": ...}
//   {"op":"quit"}
// A failure answers {"error": "..."}. WEB_DIR is where npm put `appwrite` and
// `playwright-core`; PROJECT and CHROMIUM come from the environment.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(process.env.WEB_DIR + "/");
const { chromium } = require("playwright-core");
const SDK = readFileSync(join(process.env.WEB_DIR, "appwrite", "dist", "iife", "sdk.js"));
const PROJECT = process.env.PROJECT;

const server = createServer((req, res) => {
  if (req.url === "/sdk.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(SDK);
  }
  res.writeHead(200, { "content-type": "text/html" });
  res.end('<!doctype html><html><head><script src="/sdk.js"></script></head><body>basalt</body></html>');
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const PORT = server.address().port;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const pages = new Map();

async function run(cmd) {
  switch (cmd.op) {
    case "page": {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      page.on("pageerror", (e) => process.stderr.write(`page ${cmd.name}: ${e}\n`));
      await page.goto(`http://localhost:${PORT}/`);
      pages.set(cmd.name, page);
      return { value: null };
    }
    case "eval": {
      const page = pages.get(cmd.name);
      const value = await page.evaluate(
        async ({ body, arg, project }) => {
          const client = (endpoint) => new Appwrite.Client().setEndpoint(endpoint).setProject(project);
          const attempt = async (p) => {
            try {
              return { value: await p };
            } catch (e) {
              return { error: { name: e.name, code: e.code, type: e.type, message: String(e.message) } };
            }
          };
          const fn = new Function("Appwrite", "arg", "client", "attempt", `return (async () => { ${body} })();`);
          return fn(Appwrite, arg, client, attempt);
        },
        { body: cmd.body, arg: cmd.arg || {}, project: PROJECT },
      );
      return { value: value === undefined ? null : value };
    }
    case "quit":
      return { value: null };
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
for await (const line of lines) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  let answer;
  try {
    answer = await run(cmd);
  } catch (e) {
    answer = { error: String(e.stack || e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (cmd.op === "quit") break;
}
await browser.close();
server.close();
