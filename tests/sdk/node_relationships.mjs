// Relationships through the official Node SDK (node-appwrite), run by tests/test_node_sdk.py
// against a real node: ENDPOINT, PROJECT and KEY come from the environment. Exits non-zero
// with the failing step on stderr.
import { createRequire } from "node:module";

const require = createRequire(process.env.SDK_DIR + "/");
const { Client, TablesDB, Databases, Query, AppwriteException, RelationshipType, RelationMutate } =
  require("node-appwrite");

const { ENDPOINT, PROJECT, KEY } = process.env;
const client = new Client().setEndpoint(ENDPOINT).setProject(PROJECT).setKey(KEY);
const t = new TablesDB(client);

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

const ids = (rows) => rows.map((r) => r.$id).sort().join(",");

let step = "start";
try {
  step = "schema";
  await t.create({ databaseId: "lib", name: "lib" });
  for (const table of ["authors", "books", "tags"]) {
    await t.createTable({ databaseId: "lib", tableId: table, name: table });
    await t.createVarcharColumn({ databaseId: "lib", tableId: table, key: "name", size: 32, required: false });
  }
  const author = await t.createRelationshipColumn({
    databaseId: "lib", tableId: "books", relatedTableId: "authors", type: RelationshipType.ManyToOne,
    twoWay: true, key: "author", twoWayKey: "books", onDelete: RelationMutate.Restrict,
  });
  check(author.type === "relationship" && author.relatedTable === "authors" && author.side === "parent",
    `the column model: ${JSON.stringify(author)}`);
  await t.createRelationshipColumn({
    databaseId: "lib", tableId: "books", relatedTableId: "tags", type: RelationshipType.ManyToMany,
    twoWay: true, key: "tags", twoWayKey: "books", onDelete: RelationMutate.Cascade,
  });
  const twin = await t.getColumn({ databaseId: "lib", tableId: "authors", key: "books" });
  check(twin.side === "child" && twin.relationType === "manyToOne" && twin.twoWayKey === "author", "the twin");
  const legacy = await new Databases(client).getAttribute({ databaseId: "lib", collectionId: "books", key: "author" });
  check(legacy.relatedCollection === "authors", "the legacy vocabulary");

  step = "links";
  await t.createRow({ databaseId: "lib", tableId: "authors", rowId: "ada", data: { name: "Ada" } });
  for (const g of ["sci", "old"]) await t.createRow({ databaseId: "lib", tableId: "tags", rowId: g, data: { name: g } });
  const b1 = await t.createRow({ databaseId: "lib", tableId: "books", rowId: "b1", data: { name: "Engines", author: "ada", tags: ["sci", "old"] } });
  check(b1.author.$id === "ada" && ids(b1.tags) === "old,sci", `the write's answer: ${JSON.stringify(b1)}`);
  await t.createRow({ databaseId: "lib", tableId: "books", rowId: "b2", data: { name: "Notes", author: "ada" } });
  const ada = await t.getRow({ databaseId: "lib", tableId: "authors", rowId: "ada", queries: [Query.select(["name", "books.*"])] });
  check(ids(ada.books) === "b1,b2" && ada.books.every((b) => !("author" in b)), "the many side, without back references");
  const listed = await t.listRows({ databaseId: "lib", tableId: "books", queries: [Query.select(["name", "author.name"]), Query.equal("author", "ada")] });
  check(listed.total === 2 && listed.rows.every((r) => r.author.name === "Ada"), "select paths on a list");
  const across = await t.listRows({ databaseId: "lib", tableId: "books", queries: [Query.equal("author.name", ["Ada"]), Query.equal("tags.name", ["sci"])] });
  check(ids(across.rows) === "b1", `queries on related rows' fields: ${JSON.stringify(across)}`);

  step = "nested";
  const b3 = await t.createRow({
    databaseId: "lib", tableId: "books", rowId: "b3",
    data: { name: "Poems", author: { $id: "bob", name: "Bob" } },
  });
  check(b3.author.$id === "bob" && b3.author.name === "Bob", `a nested row made: ${JSON.stringify(b3)}`);
  await t.updateRow({ databaseId: "lib", tableId: "books", rowId: "b3", data: { author: { $id: "bob", name: "Robert" } } });
  check((await t.getRow({ databaseId: "lib", tableId: "authors", rowId: "bob" })).name === "Robert", "a nested row updated");
  await t.deleteRow({ databaseId: "lib", tableId: "books", rowId: "b3" });
  await t.deleteRow({ databaseId: "lib", tableId: "authors", rowId: "bob" });

  step = "onDelete";
  await refused(403, "row_delete_restricted", () => t.deleteRow({ databaseId: "lib", tableId: "authors", rowId: "ada" }), "restrict");
  await t.deleteRow({ databaseId: "lib", tableId: "books", rowId: "b1" });
  check((await t.listRows({ databaseId: "lib", tableId: "tags" })).total === 0, "cascade deletes the tags");
  const changed = await t.updateRelationshipColumn({ databaseId: "lib", tableId: "authors", key: "books", onDelete: RelationMutate.SetNull });
  check(changed.onDelete === "setNull", "onDelete updated from the child end");
  await t.deleteRow({ databaseId: "lib", tableId: "authors", rowId: "ada" });
  const b2 = await t.getRow({ databaseId: "lib", tableId: "books", rowId: "b2" });
  check(b2.author === null, "setNull clears the reference");

  step = "delete";
  await t.deleteColumn({ databaseId: "lib", tableId: "books", key: "author" });
  const cols = (await t.listColumns({ databaseId: "lib", tableId: "authors" })).columns.map((c) => c.key);
  check(!cols.includes("books"), "the twin goes with its column");
  console.log("ok");
} catch (e) {
  console.error(`step ${step}: ${e.stack || e}`);
  process.exit(1);
}
