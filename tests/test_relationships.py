"""Relationships, driven through the official SDK: every type one- and two-way, links made by
id from either end, related rows loaded by select paths, onDelete restrict / cascade /
setNull, renames and deletes of relationship columns, and related rows filtered by what
the caller may read."""
import pytest
from appwrite.client import Client
from appwrite.enums.relation_mutate import RelationMutate
from appwrite.enums.relationship_type import RelationshipType
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.account import Account
from appwrite.services.tables_db import TablesDB


def col(c, key):
    return c[key] if isinstance(c, dict) else getattr(c, key)


@pytest.fixture
def lib(tables):
    tables.create(database_id="lib", name="lib")
    for t in ("authors", "books", "shelves", "tags", "profiles"):
        tables.create_table("lib", t, t)
        tables.create_varchar_column("lib", t, "name", 32, False)
    return tables


def test_relationship_columns(lib, project):
    t = lib
    c = t.create_relationship_column("lib", "books", "authors", RelationshipType.MANYTOONE, two_way=True,
                                     key="author", two_way_key="books", on_delete=RelationMutate.SETNULL)
    assert (c.key, c.type, c.relatedtable, c.relationtype, c.twoway, c.twowaykey, c.ondelete, c.side) == (
        "author", "relationship", "authors", "manyToOne", True, "books", "setNull", "parent")
    twin = t.get_column("db" if False else "lib", "authors", "books")
    assert (col(twin, "side"), col(twin, "twoWayKey") if isinstance(twin, dict) else twin.twowaykey) == ("child", "author")
    # Defaults: the key is the related table's id, the twin's this table's.
    one_way = t.create_relationship_column("lib", "books", "shelves", RelationshipType.MANYTOONE)
    assert (one_way.key, one_way.twowaykey, one_way.twoway, one_way.ondelete) == ("shelves", "books", False, "restrict")
    # A one-way relationship's twin is hidden, but its key is taken.
    assert "books" not in [col(x, "key") for x in t.list_columns("lib", "shelves").columns]
    with pytest.raises(AppwriteException) as e:
        t.get_column("lib", "shelves", "books")
    assert e.value.code == 404
    with pytest.raises(AppwriteException) as e:
        t.create_relationship_column("lib", "tags", "shelves", RelationshipType.ONETOMANY, key="x", two_way_key="books")
    assert (e.value.code, e.value.type) == (409, "column_already_exists")
    with pytest.raises(AppwriteException) as e:
        t.create_relationship_column("lib", "books", "authors", RelationshipType.ONETOONE, key="author")
    assert (e.value.code, e.value.type) == (409, "column_already_exists")
    with pytest.raises(AppwriteException) as e:
        t.create_relationship_column("lib", "books", "nope", RelationshipType.ONETOONE)
    assert (e.value.code, e.value.type) == (404, "table_not_found")
    t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, two_way=True)
    with pytest.raises(AppwriteException) as e:
        t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, key="more", two_way_key="more")
    assert e.value.code == 409
    # Legacy vocabulary.
    legacy = project.databases().get_attribute("lib", "books", "author")
    assert col(legacy, "relatedCollection") if isinstance(legacy, dict) else legacy.relatedcollection == "authors"
    # Update from either end: onDelete on both, a new key for that end.
    u = t.update_relationship_column("lib", "authors", "books", on_delete=RelationMutate.CASCADE, new_key="written")
    assert (u.key, u.ondelete, u.side) == ("written", "cascade", "child")
    parent = t.get_column("lib", "books", "author")
    assert (parent.ondelete, parent.twowaykey) == ("cascade", "written")
    # Deleting one end deletes its twin.
    t.delete_column("lib", "books", "author")
    assert "written" not in [col(x, "key") for x in t.list_columns("lib", "authors").columns]
    tab = t.get_table("lib", "books")
    assert sorted(col(x, "key") for x in tab.columns) == ["name", "shelves", "tags"]


def ids(rows):
    return sorted(r["$id"] if isinstance(r, dict) else r.id for r in rows)


def test_links_by_id_from_either_end_and_loading(lib):
    t = lib
    t.create_relationship_column("lib", "books", "authors", RelationshipType.MANYTOONE, two_way=True, key="author", two_way_key="books")
    t.create_relationship_column("lib", "authors", "profiles", RelationshipType.ONETOONE, two_way=True, key="profile", two_way_key="author")
    t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, two_way=True, key="tags", two_way_key="books")
    t.create_relationship_column("lib", "shelves", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="shelf")
    for a in ("ada", "bob"):
        t.create_row("lib", "authors", a, {"name": a.title()})
    for p in ("p1", "p2"):
        t.create_row("lib", "profiles", p, {"name": p})
    for g in ("sci", "art", "old"):
        t.create_row("lib", "tags", g, {"name": g})
    b1 = t.create_row("lib", "books", "b1", {"name": "Engines", "author": "ada", "tags": ["sci", "old"]})
    # A write answers with its related rows loaded, one level deep, without back references.
    assert b1.data["author"]["$id"] == "ada" and b1.data["author"]["name"] == "Ada"
    assert "books" not in b1.data["author"]
    assert ids(b1.data["tags"]) == ["old", "sci"]
    t.create_row("lib", "books", "b2", {"name": "Notes", "author": "ada"})
    t.create_row("lib", "books", "b3", {"name": "Poems", "author": "bob", "tags": ["art"]})
    # Without a select, a stored single reference shows as the id; list ends show nothing.
    plain = t.get_row("lib", "books", "b1")
    assert plain.data["author"] == "ada" and "tags" not in plain.data
    ada = t.get_row("lib", "authors", "ada")
    assert "books" not in ada.data
    # Loading: the many side, the one side, manyToMany from both ends.
    ada = t.get_row("lib", "authors", "ada", queries=[Query.select(["*", "books.*"])])
    assert ids(ada.data["books"]) == ["b1", "b2"] and ada.data["name"] == "Ada"
    assert all("author" not in b for b in ada.data["books"])
    sci = t.get_row("lib", "tags", "sci", queries=[Query.select(["books.name"])])
    assert [b["name"] for b in sci.data["books"]] == ["Engines"] and set(sci.data["books"][0]) >= {"$id", "$tableId", "$sequence", "name"}
    listed = t.list_rows("lib", "books", [Query.select(["name", "author.name", "tags.*"]), Query.order_asc("$sequence")])
    assert [(r.data["name"], r.data["author"]["name"], ids(r.data["tags"])) for r in listed.rows] == [
        ("Engines", "Ada", ["old", "sci"]), ("Notes", "Ada", []), ("Poems", "Bob", ["art"])]
    # Two levels down; a back reference never shows, and the third level shows no
    # relationships (Appwrite's depth limit of 3 counts the row asked for).
    t.update_row("lib", "authors", "ada", {"profile": "p1"})
    deep = t.get_row("lib", "tags", "sci", queries=[Query.select(["books.author.*"])])
    author = deep.data["books"][0]["author"]
    assert author["$id"] == "ada" and author["name"] == "Ada"
    assert "books" not in author and "profile" not in author
    t.update_row("lib", "authors", "ada", {"profile": None})
    # Linking from the other end: a one-to-many list set from the parent moves the children.
    t.create_row("lib", "shelves", "s1", {"name": "top", "books": ["b1", "b2"]})
    assert t.get_row("lib", "books", "b1").data["shelf"] == "s1"
    t.create_row("lib", "shelves", "s2", {"name": "low"})
    t.update_row("lib", "shelves", "s2", {"books": ["b2", "b3"]})
    assert [t.get_row("lib", "books", b).data["shelf"] for b in ("b1", "b2", "b3")] == ["s1", "s2", "s2"]
    t.update_row("lib", "shelves", "s2", {"books": []})
    assert t.get_row("lib", "books", "b3").data["shelf"] is None
    # Many-to-one from the child end; many-to-many from the child end.
    t.update_row("lib", "authors", "bob", {"books": ["b1", "b3"]})
    assert t.get_row("lib", "books", "b1").data["author"] == "bob"
    t.update_row("lib", "tags", "art", {"books": ["b1"]})
    b1 = t.get_row("lib", "books", "b1", queries=[Query.select(["tags.*"])])
    assert ids(b1.data["tags"]) == ["art", "old", "sci"]
    b3 = t.get_row("lib", "books", "b3", queries=[Query.select(["tags.*"])])
    assert b3.data["tags"] == []
    # One to one, both ways, kept one to one.
    t.update_row("lib", "authors", "ada", {"profile": "p1"})
    assert t.get_row("lib", "profiles", "p1").data["author"] == "ada"
    with pytest.raises(AppwriteException) as e:
        t.update_row("lib", "authors", "bob", {"profile": "p1"})
    assert (e.value.code, e.value.type) == (409, "row_already_exists")
    t.update_row("lib", "authors", "ada", {"profile": "p2"})
    assert t.get_row("lib", "profiles", "p1").data["author"] is None
    assert t.get_row("lib", "profiles", "p2").data["author"] == "ada"
    # Queries on a stored reference; not on a list end.
    assert ids(t.list_rows("lib", "books", [Query.equal("author", "bob")]).rows) == ["b1", "b3"]
    with pytest.raises(AppwriteException) as e:
        t.list_rows("lib", "authors", [Query.equal("books", "b1")])
    assert e.value.type == "general_query_invalid"
    bad = [
        ("books", "b9", {"author": ["ada"]}),
        ("authors", "x", {"books": "b1"}),
        ("books", "b9", {"author": "bad id!"}),
        ("books", "b9", {"tags": [1]}),
    ]
    for table, rid, data in bad:
        with pytest.raises(AppwriteException) as e:
            t.create_row("lib", table, rid, data)
        assert (e.value.code, e.value.type) == (400, "relationship_value_invalid"), data
    with pytest.raises(AppwriteException) as e:
        t.update_rows("lib", "books", {"name": "x"})
    assert e.value.code == 400


def test_on_delete(lib):
    t = lib
    t.create_relationship_column("lib", "authors", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="author", on_delete=RelationMutate.RESTRICT)
    t.create_relationship_column("lib", "shelves", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="shelf", on_delete=RelationMutate.SETNULL)
    t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, two_way=True, key="tags", two_way_key="books", on_delete=RelationMutate.CASCADE)
    t.create_row("lib", "authors", "ada", {"name": "Ada"})
    t.create_row("lib", "shelves", "s1", {"name": "top"})
    for g in ("g1", "g2"):
        t.create_row("lib", "tags", g, {})
    t.create_row("lib", "books", "b1", {"author": "ada", "shelf": "s1", "tags": ["g1", "g2"]})
    t.create_row("lib", "books", "b2", {"author": "ada", "shelf": "s1"})
    # restrict: refused while the author has books, and nothing changes.
    with pytest.raises(AppwriteException) as e:
        t.delete_row("lib", "authors", "ada")
    assert (e.value.code, e.value.type) == (403, "row_delete_restricted")
    assert e.value.message == "Row cannot be deleted because it is referenced by another row."
    # setNull: the shelf goes, its books stay without it.
    t.delete_row("lib", "shelves", "s1")
    assert [t.get_row("lib", "books", b).data["shelf"] for b in ("b1", "b2")] == [None, None]
    # cascade: deleting a book deletes its tags (many to many from the parent).
    t.delete_row("lib", "books", "b1")
    assert t.list_rows("lib", "tags").total == 0
    # The author's books are gone or unlinked: restrict now lets it go once b2 is gone.
    t.delete_row("lib", "books", "b2")
    t.delete_row("lib", "authors", "ada")
    assert t.list_rows("lib", "authors").total == 0
    # A cascade two levels deep, in one write.
    t.create_relationship_column("lib", "profiles", "authors", RelationshipType.ONETOONE, two_way=True, key="author", two_way_key="profile", on_delete=RelationMutate.CASCADE)
    t.update_relationship_column("lib", "authors", "books", on_delete=RelationMutate.CASCADE)
    t.create_row("lib", "authors", "bob", {"name": "Bob"})
    t.create_row("lib", "profiles", "p1", {"author": "bob"})
    t.create_row("lib", "books", "b3", {"author": "bob"})
    t.delete_row("lib", "profiles", "p1")
    assert t.list_rows("lib", "authors").total == 0 and t.list_rows("lib", "books").total == 0


def test_related_rows_a_user_may_not_read_are_left_out(project, lib):
    t = lib
    for table in ("authors", "books"):
        t.update_table("lib", table, table, permissions=[Permission.create(Role.users()), Permission.read(Role.users())] if table == "authors" else [Permission.create(Role.users())], row_security=True)
    t.create_relationship_column("lib", "authors", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="author")
    t.create_row("lib", "authors", "ada", {"name": "Ada"})
    t.create_row("lib", "books", "open", {"author": "ada"}, permissions=[Permission.read(Role.users())])
    t.create_row("lib", "books", "secret", {"author": "ada"}, permissions=[Permission.read(Role.user("someone"))])
    Account(Client().set_endpoint(project.node.url()).set_project(project.id)).create(ID.unique(), "reader@x.io", "password123")
    session = Account(project.client()).create_email_password_session("reader@x.io", "password123")
    user = TablesDB(Client().set_endpoint(project.node.url()).set_project(project.id).set_session(session.secret))
    seen = user.get_row("lib", "authors", "ada", queries=[Query.select(["books.*"])])
    assert ids(seen.data["books"]) == ["open"]
    assert ids(t.get_row("lib", "authors", "ada", queries=[Query.select(["books.*"])]).data["books"]) == ["open", "secret"]
    # A query across the relationship matches only related rows the caller may read.
    assert ids(user.list_rows("lib", "authors", [Query.equal("books.$id", ["secret"])]).rows) == []
    assert ids(user.list_rows("lib", "authors", [Query.equal("books.$id", ["open"])]).rows) == ["ada"]
    assert ids(t.list_rows("lib", "authors", [Query.equal("books.$id", ["secret"])]).rows) == ["ada"]
    # A user may not move a row they cannot update by linking it.
    with pytest.raises(AppwriteException) as e:
        user.create_row("lib", "authors", "mine", {"books": ["open"]})
    assert e.value.code == 401
    assert t.get_row("lib", "books", "open").data["author"] == "ada"


def test_nested_writes_of_related_rows(project, lib):
    t = lib
    t.create_relationship_column("lib", "books", "authors", RelationshipType.MANYTOONE, two_way=True, key="author", two_way_key="books")
    t.create_relationship_column("lib", "authors", "profiles", RelationshipType.ONETOONE, two_way=True, key="profile", two_way_key="author")
    t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, two_way=True, key="tags", two_way_key="books")
    t.create_relationship_column("lib", "shelves", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="shelf")
    t.create_row("lib", "tags", "old", {"name": "old"})
    # A row with its related rows in it: new ones are made (three levels with the row), an id
    # links an existing one, and the answer shows them.
    b1 = t.create_row("lib", "books", "b1", {
        "name": "Engines",
        "author": {"$id": "ada", "name": "Ada", "profile": {"$id": "p1", "name": "first"}},
        "tags": [{"$id": "sci", "name": "sci"}, "old"],
    }, permissions=[Permission.read(Role.any())])
    assert b1.data["author"]["$id"] == "ada" and b1.data["author"]["name"] == "Ada"
    assert ids(b1.data["tags"]) == ["old", "sci"]
    ada = t.get_row("lib", "authors", "ada", queries=[Query.select(["*", "profile.*", "books.*"])])
    assert ada.data["profile"]["name"] == "first" and ids(ada.data["books"]) == ["b1"]
    # A made row takes the permissions of the row it is nested in.
    assert t.get_row("lib", "tags", "sci").permissions == ['read("any")']
    assert t.get_row("lib", "profiles", "p1").data["author"] == "ada"
    # Without an $id a nested row gets a new one.
    s1 = t.create_row("lib", "shelves", "s1", {"name": "top", "books": [{"name": "Unnamed"}, "b1"]})
    assert len(s1.data["books"]) == 2
    made = [b for b in ids(s1.data["books"]) if b != "b1"][0]
    assert t.get_row("lib", "books", made).data["shelf"] == "s1"
    # An existing nested row is updated where its fields differ; the row moves with it.
    t.update_row("lib", "books", "b1", {"author": {"$id": "ada", "name": "Ada L."}})
    assert t.get_row("lib", "authors", "ada").data["name"] == "Ada L."
    t.upsert_row("lib", "books", "b2", {"name": "Notes", "author": {"$id": "bob", "name": "Bob"}})
    assert t.get_row("lib", "books", "b2").data["author"] == "bob"
    # All or nothing: a nested row that fails leaves nothing of the write.
    with pytest.raises(AppwriteException) as e:
        t.create_row("lib", "books", "b3", {"name": "x", "author": {"$id": "cy", "name": "y" * 100}})
    assert e.value.code == 400
    for table, rid in (("books", "b3"), ("authors", "cy")):
        with pytest.raises(AppwriteException) as e:
            t.get_row("lib", table, rid)
        assert e.value.code == 404
    # A nested row with a bad id is refused.
    with pytest.raises(AppwriteException) as e:
        t.create_row("lib", "books", "b4", {"author": {"$id": "bad id!", "name": "z"}})
    assert e.value.code == 400
    # A user may make related rows only where they may create rows.
    t.update_table("lib", "books", "books", permissions=[Permission.create(Role.users())], row_security=True)
    Account(Client().set_endpoint(project.node.url()).set_project(project.id)).create(ID.unique(), "nester@x.io", "password123")
    session = Account(project.client()).create_email_password_session("nester@x.io", "password123")
    user = TablesDB(Client().set_endpoint(project.node.url()).set_project(project.id).set_session(session.secret))
    with pytest.raises(AppwriteException) as e:
        user.create_row("lib", "books", "ub", {"name": "mine", "author": {"$id": "ua", "name": "me"}})
    assert e.value.code == 401
    t.update_table("lib", "authors", "authors", permissions=[Permission.create(Role.users())], row_security=True)
    # A related row the user may not read is not there for them: naming it with its own
    # values makes a duplicate, so nothing is learnt of them.
    with pytest.raises(AppwriteException) as e:
        user.create_row("lib", "books", "leak", {"name": "x", "author": {"$id": "bob", "name": "Bob"}})
    assert (e.value.code, e.value.type) == (409, "row_already_exists")
    mine = user.create_row("lib", "books", "ub", {"name": "mine", "author": {"$id": "ua", "name": "me"}})
    assert mine.data["author"]["$id"] == "ua"
    assert sorted(t.get_row("lib", "authors", "ua").permissions) == sorted(
        f'{a}("user:{session.userid}")' for a in ("read", "update", "delete"))


def test_queries_on_related_rows_fields(project, lib):
    t = lib
    t.create_relationship_column("lib", "books", "authors", RelationshipType.MANYTOONE, two_way=True, key="author", two_way_key="books")
    t.create_relationship_column("lib", "authors", "profiles", RelationshipType.ONETOONE, two_way=True, key="profile", two_way_key="author")
    t.create_relationship_column("lib", "books", "tags", RelationshipType.MANYTOMANY, two_way=True, key="tags", two_way_key="books")
    t.create_relationship_column("lib", "shelves", "books", RelationshipType.ONETOMANY, two_way=True, key="books", two_way_key="shelf")
    t.create_row("lib", "profiles", "p1", {"name": "poet"})
    t.create_row("lib", "authors", "ada", {"name": "Ada", "profile": "p1"})
    t.create_row("lib", "authors", "bob", {"name": "Bob"})
    for g in ("sci", "art"):
        t.create_row("lib", "tags", g, {"name": g})
    t.create_row("lib", "books", "b1", {"name": "Engines", "author": "ada", "tags": ["sci"]})
    t.create_row("lib", "books", "b2", {"name": "Notes", "author": "ada", "tags": ["sci", "art"]})
    t.create_row("lib", "books", "b3", {"name": "Poems", "author": "bob", "tags": ["art"]})
    t.create_row("lib", "shelves", "s1", {"name": "top", "books": ["b1", "b3"]})

    def listed(table, *queries):
        return ids(t.list_rows("lib", table, list(queries)).rows)

    # A stored reference, its related row's field; two levels down.
    assert listed("books", Query.equal("author.name", ["Ada"])) == ["b1", "b2"]
    assert listed("books", Query.starts_with("author.name", "B")) == ["b3"]
    assert listed("books", Query.equal("author.profile.name", ["poet"])) == ["b1", "b2"]
    # Combined with the row's own filters, and with several on one relationship.
    assert listed("books", Query.equal("author.name", ["Ada"]), Query.equal("name", ["Notes"])) == ["b2"]
    assert listed("books", Query.equal("author.name", ["Ada"]), Query.not_equal("author.$id", "bob")) == ["b1", "b2"]
    # A many-to-many list, from either end; a one-to-many list from the parent.
    assert listed("books", Query.equal("tags.name", ["art"])) == ["b2", "b3"]
    assert listed("tags", Query.equal("books.name", ["Engines"])) == ["sci"]
    assert listed("authors", Query.equal("books.name", ["Poems"])) == ["bob"]
    assert listed("shelves", Query.equal("books.author.name", ["Bob"])) == ["s1"]
    # Nothing related matches: nothing does, with its total.
    none = t.list_rows("lib", "books", [Query.equal("author.name", ["Cy"])])
    assert (none.total, none.rows) == (0, [])
    # Unknown attributes, of the related table or of no relationship, are refused.
    for bad in (Query.equal("author.nope", ["x"]), Query.equal("nope.name", ["x"])):
        with pytest.raises(AppwriteException) as e:
            t.list_rows("lib", "books", [bad])
        assert (e.value.code, e.value.type) == (400, "general_query_invalid"), bad
