// Auth flows through the official Node SDK (node-appwrite), run by tests/test_node_sdk.py
// against a real node: ENDPOINT, PROJECT and KEY come from the environment. Exits non-zero
// with the failing step on stderr.
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(process.env.SDK_DIR + "/");
const sdk = require("node-appwrite");
const { Client, Account, Users, Teams, TablesDB, ID, Query, Permission, Role, AppwriteException,
  AuthenticatorType, AuthenticationFactor, Storage, Tokens } = sdk;
const { InputFile } = require("node-appwrite/file");

const { ENDPOINT, PROJECT, KEY } = process.env;
const PASSWORD = "correct-horse-battery";
const keyClient = () => new Client().setEndpoint(ENDPOINT).setProject(PROJECT).setKey(KEY);
const client = () => new Client().setEndpoint(ENDPOINT).setProject(PROJECT);

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

async function refused(code, type, fn, what) {
  try {
    await fn();
  } catch (e) {
    check(e instanceof AppwriteException, `${what}: an AppwriteException, got ${e}`);
    check(e.code === code && e.type === type, `${what}: ${code} ${type}, got ${e.code} ${e.type}: ${e.message}`);
    return;
  }
  throw new Error(`${what}: expected ${code} ${type}, it succeeded`);
}

// RFC 6238 (SHA-1, 6 digits, 30 s), written here so the test does not trust the server's.
function totp(secret) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000)));
  const d = createHmac("sha1", key).update(counter).digest();
  const o = d[d.length - 1] & 15;
  return String((d.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, "0");
}

async function signIn(email, password = PASSWORD) {
  const s = await new Account(keyClient()).createEmailPasswordSession({ email, password });
  check(s.secret && s.provider === "email", "the key holder gets the session secret");
  return { session: s, account: new Account(client().setSession(s.secret)), client: client().setSession(s.secret) };
}

let step = "start";
try {
  step = "users and sessions";
  const users = new Users(keyClient());
  const u = await users.create({ userId: ID.unique(), email: "nia@example.com", password: PASSWORD, name: "Nia" });
  check(u.email === "nia@example.com" && u.status === true, "user created");
  await refused(401, "user_invalid_credentials",
    () => new Account(keyClient()).createEmailPasswordSession({ email: "nia@example.com", password: "wrong-password" }),
    "wrong password");
  const me = await signIn("nia@example.com");
  check((await me.account.get()).$id === u.$id, "account.get with the session");
  check((await me.account.updateName({ name: "Nia B" })).name === "Nia B", "account.updateName");
  const sessions = await me.account.listSessions();
  check(sessions.total === 1 && sessions.sessions[0].current === true, "listSessions marks the current one");

  step = "JWTs";
  const jwt = await me.account.createJWT();
  const viaJwt = new Account(client().setJWT(jwt.jwt));
  check((await viaJwt.get()).$id === u.$id, "account.get with a JWT");
  await refused(401, "user_jwt_invalid", () => new Account(client().setJWT(jwt.jwt + "x")).get(), "tampered JWT");

  step = "tokens";
  const token = await users.createToken({ userId: u.$id });
  const viaToken = await new Account(keyClient()).createSession({ userId: u.$id, secret: token.secret });
  check(viaToken.provider === "token" && viaToken.factors.includes("token"), "a token's session");
  await refused(401, "user_invalid_token",
    () => new Account(keyClient()).createSession({ userId: u.$id, secret: token.secret }), "a token used twice");

  step = "teams";
  const teams = new Teams(keyClient());
  const team = await teams.create({ teamId: ID.unique(), name: "Crew" });
  const m = await teams.createMembership({ teamId: team.$id, roles: ["dev"], userId: u.$id });
  check(m.confirm === true && m.roles[0] === "dev", "a key's membership is confirmed");
  const mine = await new Teams(me.client).list();
  check(mine.total === 1 && mine.teams[0].$id === team.$id, "the member lists its team");

  step = "rows and permissions";
  const db = new TablesDB(keyClient());
  await db.create({ databaseId: "nd", name: "nd" });
  await db.createTable({ databaseId: "nd", tableId: "notes", name: "Notes",
    permissions: [Permission.create(Role.users()), Permission.read(Role.team(team.$id, "dev"))], rowSecurity: true });
  await db.createVarcharColumn({ databaseId: "nd", tableId: "notes", key: "text", size: 64, required: true });
  const mineDb = new TablesDB(me.client);
  const row = await mineDb.createRow({ databaseId: "nd", tableId: "notes", rowId: "r1", data: { text: "hi" } });
  check(row.$permissions.includes(`read("user:${u.$id}")`), "the creator reads what it made");
  const listed = await mineDb.listRows({ databaseId: "nd", tableId: "notes", queries: [Query.limit(5)] });
  check(listed.total === 1, "the member lists the row");
  const asGuest = await new TablesDB(client()).listRows({ databaseId: "nd", tableId: "notes" });
  check(asGuest.total === 0 && asGuest.rows.length === 0, "a guest reads none of the rows");
  await refused(404, "row_not_found", () => new TablesDB(client()).getRow({ databaseId: "nd", tableId: "notes", rowId: "r1" }),
    "a guest may not get the row");

  step = "MFA";
  const auth = await me.account.createMfaAuthenticator({ type: AuthenticatorType.Totp });
  await me.account.updateMfaAuthenticator({ type: AuthenticatorType.Totp, otp: totp(auth.secret) });
  check((await me.account.updateMFA({ mfa: true })).mfa === true, "MFA on");
  const short = await signIn("nia@example.com");
  await refused(401, "user_more_factors_required", () => short.account.get(), "a password-only session");
  const ch = await short.account.createMfaChallenge({ factor: AuthenticationFactor.Totp });
  const done = await short.account.updateMfaChallenge({ challengeId: ch.$id, otp: totp(auth.secret) });
  check(done.factors.includes("totp") && done.mfaUpdatedAt, "the challenge adds the factor");
  check((await short.account.get()).$id === u.$id, "the completed session works");

  step = "logs";
  const logs = await me.account.listLogs();
  check(logs.total >= 3 && logs.logs[0].event && logs.logs[0].userId === u.$id, "account.listLogs");
  const theirs = await users.listLogs({ userId: u.$id, queries: [Query.limit(2)] });
  check(theirs.logs.length === 2 && theirs.total === logs.total, "users.listLogs pages");

  step = "storage";
  const storage = new Storage(keyClient());
  await storage.createBucket({ bucketId: "nodefiles", name: "Node files", compression: "zstd",
    permissions: [Permission.read(Role.any())] });
  // 12 MiB: the SDK sends the first chunk without x-appwrite-id, the rest with the id it got,
  // eight at a time, each form with the file before its permissions.
  const big = Buffer.alloc(12 * 1024 * 1024 + 3);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 12)) & 0xff;
  const made = await storage.createFile({ bucketId: "nodefiles", fileId: ID.unique(),
    file: InputFile.fromBuffer(big, "big.bin"), permissions: [Permission.read(Role.any())] });
  check(made.chunksUploaded === 3 && made.chunksTotal === 3 && made.sizeOriginal === big.length,
    "a chunked upload completes");
  const back = Buffer.from(await storage.getFileDownload({ bucketId: "nodefiles", fileId: made.$id }));
  check(back.equals(big), "the download is byte-exact");
  const small = await storage.createFile({ bucketId: "nodefiles", fileId: "small",
    file: InputFile.fromBuffer(Buffer.from("hello from node"), "hello.txt") });
  check(small.mimeType === "text/plain" && small.chunksTotal === 1, "a small upload");
  const files = await storage.listFiles({ bucketId: "nodefiles", queries: [Query.equal("name", ["hello.txt"])] });
  check(files.total === 1 && files.files[0].$id === "small", "listFiles with a query");
  const fileToken = await new Tokens(keyClient()).createFileToken({ bucketId: "nodefiles", fileId: "small" });
  const anon = new Storage(client());
  const shared = Buffer.from(await anon.getFileView({ bucketId: "nodefiles", fileId: "small", token: fileToken.secret }));
  check(shared.toString() === "hello from node", "a resource token opens the file");
  await storage.deleteFile({ bucketId: "nodefiles", fileId: "small" });
  await refused(404, "storage_file_not_found", () => storage.getFile({ bucketId: "nodefiles", fileId: "small" }), "a deleted file");

  step = "sign-out";
  await me.account.deleteSession({ sessionId: "current" });
  await refused(401, "general_unauthorized_scope", () => me.account.get(), "a deleted session");
  console.log("ok");
} catch (e) {
  console.error(`${step}: ${e.stack || e}`);
  process.exit(1);
}
