"""Route coverage: every Databases and TablesDB path of the 1.9.3 server spec is served (none
answers `general_route_not_found`), and every GET among them answers 200 for resources that
exist, so no path is swallowed by a neighbour's pattern (`/databases/usage` by
`/databases/{databaseId}`)."""
import json
import os
import re

from harness import http

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "appwrite", "openapi-1.9.3-server.json")
METHODS = ("get", "post", "put", "patch", "delete")


def operations():
    spec = json.load(open(SPEC))
    for path, ops in spec["paths"].items():
        if path.startswith("/databases") or path.startswith("/tablesdb"):
            for method in ops:
                if method in METHODS:
                    yield method.upper(), path, ops[method].get("operationId")


# The console's routes of these services (endpoints-1.9.3.md; not in the server spec).
CONSOLE = [
    "/databases/usage", "/databases/{databaseId}/usage", "/databases/{databaseId}/logs",
    "/databases/{databaseId}/collections/{collectionId}/usage",
    "/databases/{databaseId}/collections/{collectionId}/logs",
    "/databases/{databaseId}/collections/{collectionId}/documents/{documentId}/logs",
    "/tablesdb/usage", "/tablesdb/{databaseId}/usage", "/tablesdb/{databaseId}/tables/{tableId}/usage",
    "/tablesdb/{databaseId}/tables/{tableId}/logs", "/tablesdb/{databaseId}/tables/{tableId}/rows/{rowId}/logs",
]


def fill(path, ids):
    return re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path)


def test_every_databases_and_tablesdb_route_is_served(project, tables):
    # Real resources for the reads: a database, a table with a column, an index, a row and a
    # transaction, named as both vocabularies name them.
    tables.create(database_id="db", name="db")
    tables.create_table("db", "t", "T")
    tables.create_varchar_column("db", "t", "name", 16, False)
    tables.create_index("db", "t", "ix", "key", ["name"])
    tables.create_row("db", "t", "r", {"name": "x"})
    tx = tables.create_transaction()
    tx_id = tx["$id"] if isinstance(tx, dict) else tx.id
    real = {"databaseId": "db", "collectionId": "t", "tableId": "t", "documentId": "r",
            "rowId": "r", "transactionId": tx_id, "attribute": "name", "column": "name"}
    ops = list(operations())
    assert len(ops) > 100, len(ops)  # the walk found the spec's paths
    ops += [("GET", path, "console") for path in CONSOLE]
    base = project.node.url()
    for method, path, op in ops:
        if method == "GET":
            ids = dict(real, key="ix" if "/indexes/" in path else "name")
            status, _, body = http(method, base + fill(path, ids), headers=project.headers())
            assert status == 200, (method, path, op, body)
        else:
            # Writes on resources that do not exist (nothing here is changed): any answer but
            # "no such route".
            ids = {k: "missing1" for k in real}
            ids["key"] = "missing1"
            status, _, body = http(method, base + fill(path, ids), {}, project.headers())
            kind = body.get("type") if isinstance(body, dict) else body
            assert kind != "general_route_not_found", (method, path, op)
            assert status < 500, (method, path, op, body)
    tables.update_transaction(tx_id, rollback=True)
