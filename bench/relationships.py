"""Related rows on a list (benchmark, not a test). One Basalt node on loopback, driven by `wrk`:
a list of 25 posts, each with a many-to-one author and ten one-to-many comments, loaded by
`select("*", "author.*", "comments.*")` (each post's author and its 10 comments: 275 related
rows per page), against the same list of 25 rows of a table without relationships, the posts
listed without loading their related rows, and a plain list of the 300 rows the loaded page
carries.

    BASALT_BIN=~/.cache/basalt/target/release/basalt python bench/relationships.py [seconds]

Prints JSON with each run's rate (per_second), p50 and p99, and the ratios to the plain list.
"""
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from harness import Node, create_project, http  # noqa: E402
from vs_pocketbase import ensure_tools, q, wrk  # noqa: E402

POSTS = 25
COMMENTS = 10
AUTHORS = 5


def list_path(table, *queries):
    qs = "&".join(f"queries%5B{i}%5D={urllib.parse.quote(x)}" for i, x in enumerate(queries))
    return f"/v1/tablesdb/bench/tables/{table}/rows?{qs}"


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    ensure_tools()
    node = Node(1).start()
    try:
        key = create_project(node, "rel")
        h = {"X-Appwrite-Project": "rel", "X-Appwrite-Key": key}
        base = node.endpoint + "/v1/tablesdb"

        def post(path, body):
            status, _, resp = http("POST", base + path, body, h)
            assert status in (200, 201, 202), (path, resp)
            return resp

        post("", {"databaseId": "bench", "name": "bench"})
        text = [{"key": "title", "type": "varchar", "size": 64, "required": False},
                {"key": "n", "type": "integer", "required": False}]
        for t in ("posts", "plain", "authors", "comments", "many"):
            post("/bench/tables", {"tableId": t, "name": t, "columns": text})
        post("/bench/tables/posts/columns/relationship",
             {"relatedTableId": "authors", "type": "manyToOne", "key": "author", "onDelete": "setNull"})
        post("/bench/tables/posts/columns/relationship",
             {"relatedTableId": "comments", "type": "oneToMany", "key": "comments", "onDelete": "cascade"})
        for a in range(AUTHORS):
            post("/bench/tables/authors/rows", {"rowId": f"a{a}", "data": {"title": f"author {a}", "n": a}})
        for p in range(POSTS):
            for c in range(COMMENTS):
                post("/bench/tables/comments/rows",
                     {"rowId": f"c{p}x{c}", "data": {"title": f"comment {c} on {p}", "n": c}})
            post("/bench/tables/posts/rows", {"rowId": f"p{p}", "data": {
                "title": f"post {p}", "n": p, "author": f"a{p % AUTHORS}",
                "comments": [f"c{p}x{c}" for c in range(COMMENTS)]}})
            post("/bench/tables/plain/rows", {"rowId": f"p{p}", "data": {"title": f"post {p}", "n": p}})
        # As many plain rows as the loaded page carries (25 posts, 25 authors, 250 comments).
        carried = POSTS * (2 + COMMENTS)
        status, _, resp = http("POST", base + "/bench/tables/many/rows", {"rows": [
            {"$id": f"m{i}", "title": f"row {i}", "n": i} for i in range(carried)]}, h)
        assert status == 201, resp

        loaded = list_path("posts", q("limit", values=[POSTS]), q("select", values=["*", "author.*", "comments.*"]))
        status, _, page = http("GET", node.endpoint + loaded, None, h)
        assert status == 200 and len(page["rows"]) == POSTS, page
        assert all(len(r["comments"]) == COMMENTS and r["author"]["$id"] for r in page["rows"]), page["rows"][0]
        runs = {
            "plain list of 25": list_path("plain", q("limit", values=[POSTS])),
            "posts, related rows not selected": list_path("posts", q("limit", values=[POSTS])),
            "posts with author.* and comments.*": loaded,
            "plain list of 300 (the rows that page carries)": list_path("many", q("limit", values=[carried])),
        }
        out = {}
        for name, path in runs.items():
            out[name] = wrk(node.endpoint, [path], h, 8, seconds)
        plain = out["plain list of 25"]
        for name, r in out.items():
            if r is not plain and plain["p50_ms"]:
                r["p50_vs_plain"] = round(r["p50_ms"] / plain["p50_ms"], 2)
                r["p99_vs_plain"] = round(r["p99_ms"] / plain["p99_ms"], 2)
                r["rate_vs_plain"] = round(r["per_second"] / plain["per_second"], 3)
        print(json.dumps(out, indent=2))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
