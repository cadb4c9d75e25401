// Client flows of the official Web SDK (npm `appwrite`) in a real browser (Debian's Chromium,
// driven by playwright-core), run by tests/test_browser.py against a three-node cluster.
// ENDPOINTS (comma-separated node URLs, `http://localhost:<port>/v1`), PROJECT, KEY, ROOT_KEY,
// DATABASE and TABLE come from the environment; WEB_DIR is where npm put `appwrite` and
// `playwright-core`. The page is served by this script on 127.0.0.1, and opened both as
// http://localhost:<port> (same site as the API: cookies reach every node, and localhost is
// always an allowed origin) and as http://127.0.0.1:<port> (another site: refused until a web
// platform covers it, then signed in through X-Fallback-Cookies alone). Prints "ok", or exits
// non-zero with the failing step on stderr.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(process.env.WEB_DIR + "/");
const { chromium } = require("playwright-core");
const SDK = readFileSync(join(process.env.WEB_DIR, "appwrite", "dist", "iife", "sdk.js"));

const { PROJECT, KEY, ROOT_KEY, DATABASE, TABLE } = process.env;
const [E1, E2, E3] = process.env.ENDPOINTS.split(",");
const PASSWORD = "correct-horse-battery";
const SESSION = `a_session_${PROJECT}`;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

// The page: the SDK's browser bundle (global `Appwrite`) and nothing else.
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

// Runs `body` in the page as an async function of (Appwrite, arg), with `client(endpoint)`
// and `attempt(promise)` at hand; what the SDK throws comes back as {error: {...}}.
async function inPage(page, body, arg = {}) {
  return page.evaluate(
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
    { body, arg, project: PROJECT },
  );
}

// The same for the server side of the test: plain HTTP with the project's key.
async function keyed(method, path, body) {
  const r = await fetch(E1 + path, {
    method,
    headers: { "content-type": "application/json", "x-appwrite-project": PROJECT, "x-appwrite-key": KEY },
    body: body && JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

let step = "start";
try {
  // ---- A page on localhost: cookies (and, as Appwrite does for localhost, the fallback too).
  step = "sign up and sign in from a page on localhost";
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`http://localhost:${PORT}/`);
  const signedIn = await inPage(page, `
    const account = new Appwrite.Account(client(arg.E1));
    const user = await account.create({ userId: Appwrite.ID.unique(), email: "ada@example.com", password: arg.PASSWORD, name: "Ada" });
    const session = await account.createEmailPasswordSession({ email: "ada@example.com", password: arg.PASSWORD });
    return { user, session, fallback: localStorage.getItem("cookieFallback") };
  `, { E1, PASSWORD });
  const uid = signedIn.user.$id;
  check(signedIn.session.userId === uid && signedIn.session.current === true, "the new session is current");
  check(signedIn.session.secret === "", "a browser is never given the session secret in the body");
  const jar = await ctx.cookies(E1);
  const cookie = jar.find((c) => c.name === SESSION);
  const legacy = jar.find((c) => c.name === SESSION + "_legacy");
  check(cookie && legacy, `both session cookies are kept: ${JSON.stringify(jar.map((c) => c.name))}`);
  check(cookie.httpOnly && cookie.secure && cookie.sameSite === "None" && legacy.httpOnly, "cookie attributes");
  check(JSON.parse(signedIn.fallback)[SESSION], "the fallback copy is in localStorage");

  step = "the cookie alone, on node 2";
  const viaCookie = await inPage(page, `
    localStorage.removeItem("cookieFallback");
    const me = await new Appwrite.Account(client(arg.E2)).get();
    const sessions = await new Appwrite.Account(client(arg.E3)).listSessions();
    return { me, sessions };
  `, { E2, E3 });
  check(viaCookie.me.$id === uid && viaCookie.me.email === "ada@example.com", "node 2 knows the cookie's user");
  check(viaCookie.sessions.total === 1 && viaCookie.sessions.sessions[0].current === true, "node 3 lists the session");

  step = "X-Fallback-Cookies alone, on node 3";
  await ctx.clearCookies();
  const viaFallback = await inPage(page, `
    localStorage.setItem("cookieFallback", arg.fallback);
    return (await new Appwrite.Account(client(arg.E3)).get()).$id;
  `, { E3, fallback: signedIn.fallback });
  check(viaFallback === uid, "node 3 knows the fallback's user");

  step = "a JWT made on node 3, used on node 2 by a page without the session";
  const jwt = await inPage(page, `
    const { jwt } = await new Appwrite.Account(client(arg.E3)).createJWT();
    localStorage.removeItem("cookieFallback");
    const anonymous = await attempt(new Appwrite.Account(client(arg.E2)).get());
    const me = await new Appwrite.Account(client(arg.E2).setJWT(jwt)).get();
    return { jwt, anonymous, me };
  `, { E2, E3 });
  check(jwt.anonymous.error && jwt.anonymous.error.code === 401, `without it the page is a guest: ${JSON.stringify(jwt.anonymous)}`);
  check(jwt.me.$id === uid, "the JWT is the user's on another node");

  step = "rows a user creates are the user's";
  await ctx.addCookies([cookie, legacy]);
  const rows = await inPage(page, `
    const db = new Appwrite.TablesDB(client(arg.E1));
    const row = await db.createRow({ databaseId: arg.DATABASE, tableId: arg.TABLE, rowId: Appwrite.ID.unique(), data: { title: "mine" } });
    const listed = await new Appwrite.TablesDB(client(arg.E2)).listRows({ databaseId: arg.DATABASE, tableId: arg.TABLE });
    const granted = await attempt(db.createRow({ databaseId: arg.DATABASE, tableId: arg.TABLE, rowId: Appwrite.ID.unique(),
      data: { title: "theirs" }, permissions: [Appwrite.Permission.read(Appwrite.Role.user("someone-else"))] }));
    return { row, listed, granted };
  `, { E1, E2, DATABASE, TABLE });
  const owner = `user:${uid}`;
  check(JSON.stringify([...rows.row.$permissions].sort()) ===
    JSON.stringify([`delete("${owner}")`, `read("${owner}")`, `update("${owner}")`]), `owner permissions: ${rows.row.$permissions}`);
  check(rows.listed.total === 1 && rows.listed.rows[0].$id === rows.row.$id, "the owner lists its row on node 2");
  check(rows.granted.error && rows.granted.error.code === 401 && rows.granted.error.type === "user_unauthorized",
    `a role the user does not hold cannot be granted: ${JSON.stringify(rows.granted)}`);

  step = "another user in another browser sees nothing of it";
  const ctx2 = await browser.newContext();
  const page2 = await ctx2.newPage();
  await page2.goto(`http://localhost:${PORT}/`);
  const other = await inPage(page2, `
    const account = new Appwrite.Account(client(arg.E3));
    await account.create({ userId: Appwrite.ID.unique(), email: "bo@example.com", password: arg.PASSWORD });
    await account.createEmailPasswordSession({ email: "bo@example.com", password: arg.PASSWORD });
    const db = new Appwrite.TablesDB(client(arg.E3));
    const listed = await db.listRows({ databaseId: arg.DATABASE, tableId: arg.TABLE });
    const got = await attempt(db.getRow({ databaseId: arg.DATABASE, tableId: arg.TABLE, rowId: arg.row }));
    return { listed, got };
  `, { E3, PASSWORD, DATABASE, TABLE, row: rows.row.$id });
  check(other.listed.total === 0 && other.listed.rows.length === 0, "another user lists none of it");
  check(other.got.error && other.got.error.code === 404, `nor gets it: ${JSON.stringify(other.got)}`);
  await ctx2.close();

  step = "signing out on node 3 ends the session on node 1";
  const out = await inPage(page, `
    await new Appwrite.Account(client(arg.E3)).deleteSession({ sessionId: "current" });
    return localStorage.getItem("cookieFallback");
  `, { E3 });
  check(!(await ctx.cookies(E1)).some((c) => c.name.startsWith(SESSION)), "the browser dropped the cookies");
  check(out === null || !JSON.parse(out)[SESSION], "no fallback copy remains");
  await ctx.addCookies([cookie, legacy]); // a copy kept by someone else
  const replay = await inPage(page, `return attempt(new Appwrite.Account(client(arg.E1)).get());`, { E1 });
  check(replay.error && replay.error.code === 401, `the old cookie is refused on node 1: ${JSON.stringify(replay)}`);
  await ctx.close();

  // ---- A page on another site: refused until a web platform covers it.
  step = "a page on an unregistered origin";
  const ctx3 = await browser.newContext();
  const page3 = await ctx3.newPage();
  await page3.goto(`http://127.0.0.1:${PORT}/`);
  const refused = await inPage(page3, `
    const account = new Appwrite.Account(client(arg.E1));
    return {
      create: await attempt(account.create({ userId: Appwrite.ID.unique(), email: "cy@example.com", password: arg.PASSWORD })),
      read: await attempt(new Appwrite.Account(client(arg.E2)).get()),
    };
  `, { E1, E2, PASSWORD });
  // The browser keeps both answers from the page (no CORS headers): fetch fails outright.
  check(refused.create.error && refused.create.error.name === "TypeError", `the write is refused: ${JSON.stringify(refused.create)}`);
  check(refused.read.error && refused.read.error.name === "TypeError", `the read is hidden: ${JSON.stringify(refused.read)}`);
  const byEmail = JSON.stringify({ method: "equal", attribute: "email", values: ["cy@example.com"] });
  const nobody = await keyed("GET", `/users?queries[]=${encodeURIComponent(byEmail)}`);
  check(nobody.status === 200 && nobody.body.total === 0, `the refused sign-up created nobody: ${JSON.stringify(nobody)}`);

  step = "the same page once a platform covers 127.0.0.1";
  const made = await fetch(`${E2.replace(/\/v1$/, "")}/v1/projects/${PROJECT}/platforms`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-appwrite-project": "console", "x-appwrite-key": ROOT_KEY },
    body: JSON.stringify({ type: "web", name: "loopback", hostname: "127.0.0.1" }),
  });
  check(made.status === 201, `platform registered: ${made.status}`);
  const cross = await inPage(page3, `
    const account = new Appwrite.Account(client(arg.E1));
    const user = await account.create({ userId: Appwrite.ID.unique(), email: "cy@example.com", password: arg.PASSWORD });
    await account.createEmailPasswordSession({ email: "cy@example.com", password: arg.PASSWORD });
    return { user, fallback: localStorage.getItem("cookieFallback") };
  `, { E1, PASSWORD });
  check(JSON.parse(cross.fallback)[SESSION], "the session came back in X-Fallback-Cookies");
  await ctx3.clearCookies(); // whatever the browser kept of third-party cookies: not used
  const crossMe = await inPage(page3, `
    const me = await new Appwrite.Account(client(arg.E3)).get();
    await new Appwrite.Account(client(arg.E2)).deleteSession({ sessionId: "current" });
    const after = await attempt(new Appwrite.Account(client(arg.E1)).get());
    return { me, after, fallback: localStorage.getItem("cookieFallback") };
  `, { E1, E2, E3 });
  check(crossMe.me.$id === cross.user.$id, "node 3 signs the page in by the fallback alone");
  check(!JSON.parse(crossMe.fallback)[SESSION], "signing out cleared the fallback copy");
  check(crossMe.after.error && crossMe.after.error.code === 401, "signed out on node 2, a guest on node 1");
  await ctx3.close();
  console.log("ok");
} catch (e) {
  console.error(`${step}: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
