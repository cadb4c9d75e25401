"""The permission model check: generated users (verified or not, with labels), teams with
roles, tables with random table permissions and row security, rows with random row
permissions; what every identity (and a guest) can get, list (total, limits, offsets, cursors,
filters), update, create and delete through the official SDK is compared with a small
reference evaluator of Appwrite's rules written here. Over 5,000 cases; zero differences."""
import os
import random

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.query import Query
from appwrite.services.account import Account
from appwrite.services.tables_db import TablesDB
from appwrite.services.teams import Teams
from appwrite.services.users import Users

PASSWORD = "correct-horse-battery"
SEED = int(os.environ.get("BASALT_PERMISSION_SEED", "20261203"))
N_USERS = 7
N_TABLES = 8
N_ROWS = 36
ACTIONS = ["read", "create", "update", "delete", "write"]


class Identity:
    def __init__(self, name, roles, client, user_id=None):
        self.name = name
        self.roles = set(roles)
        self.client = client
        self.user_id = user_id


def grants(perms, action, roles):
    """Does a permission list give `action` to any of `roles`? (`write` is create, update and
    delete.)"""
    for p in perms:
        act, _, rest = p.partition("(")
        role = rest.rstrip(")").strip('"')
        if role in roles and (act == action or (act == "write" and action in ("create", "update", "delete"))):
            return True
    return False


class Table:
    def __init__(self, tid, perms, row_security):
        self.id = tid
        self.perms = perms
        self.row_security = row_security
        self.rows = []  # [id, n, perms] in creation ($sequence) order

    def may(self, action, roles, row=None):
        if grants(self.perms, action, roles):
            return True
        return row is not None and self.row_security and grants(row[2], action, roles)

    def readable(self, roles):
        return [r for r in self.rows if self.may("read", roles, r)]


def perm(action, role):
    return f'{action}("{role}")'


def test_permission_model_matches_the_reference(project):
    rng = random.Random(SEED)
    key = project.client()
    users, teams = Users(key), Teams(key)
    url = project.node.url()

    # Identities: users with verification and labels, in teams with roles.
    team_ids = [f"team{i}" for i in range(3)]
    for t in team_ids:
        teams.create(team_id=t, name=t)
    identities = []
    member_ids = []
    for i in range(N_USERS):
        email = f"user{i}@example.com"
        u = users.create(user_id=f"user{i}", email=email, password=PASSWORD)
        verified = rng.random() < 0.5
        if verified:
            users.update_email_verification(user_id=u.id, email_verification=True)
        labels = sorted(rng.sample(["admin", "staff", "beta"], rng.randint(0, 2)))
        if labels:
            users.update_labels(user_id=u.id, labels=labels)
        roles = {"any", "users", f"user:{u.id}", f"user:{u.id}/{'verified' if verified else 'unverified'}",
                 f"users/{'verified' if verified else 'unverified'}"}
        roles |= {f"label:{l}" for l in labels}
        for t in team_ids:
            if rng.random() < 0.45:
                team_roles = rng.sample(["owner", "dev", "viewer"], rng.randint(0, 2))
                m = teams.create_membership(team_id=t, roles=team_roles, user_id=u.id)
                member_ids.append(m.id)
                roles |= {f"team:{t}", f"member:{m.id}"} | {f"team:{t}/{r}" for r in team_roles}
        s = Account(project.client()).create_email_password_session(email=email, password=PASSWORD)
        client = Client().set_endpoint(url).set_project(project.id).set_session(s.secret)
        identities.append(Identity(f"user{i}", roles, client, u.id))
    identities.append(Identity("guest", {"any", "guests"}, Client().set_endpoint(url).set_project(project.id)))

    pool = (["any", "guests", "users", "users/verified", "users/unverified", "label:admin", "label:staff"]
            + [f"user{i}" for i in range(N_USERS)] + team_ids
            + [f"{t}/{r}" for t in team_ids for r in ("owner", "dev")] + member_ids[:4])

    def role_of(p):
        if p.startswith("user") and p[4:].isdigit():
            return rng.choice([f"user:{p}", f"user:{p}/verified", f"user:{p}/unverified"])
        if p.startswith("team"):
            return f"team:{p}"
        if p in member_ids:
            return f"member:{p}"
        return p

    def random_perms(k, actions):
        return sorted({perm(rng.choice(actions), role_of(rng.choice(pool))) for _ in range(k)})

    # Tables and rows, made by the key (which may grant any role).
    db = TablesDB(key)
    db.create(database_id="pm", name="pm")
    tables = []
    for ti in range(N_TABLES):
        t = Table(f"t{ti}", random_perms(rng.randint(0, 4), ACTIONS), rng.random() < 0.75)
        db.create_table("pm", t.id, t.id, permissions=t.perms, row_security=t.row_security)
        db.create_integer_column("pm", t.id, "n", True)
        tables.append(t)
    for t in tables:
        # Distinct values: an order by `n` has no ties to break.
        values = rng.sample(range(1000), N_ROWS)
        for ri in range(N_ROWS):
            row = [f"r{ri}", values[ri], random_perms(rng.randint(0, 3), ["read", "update", "delete", "write"])]
            db.create_row("pm", t.id, row[0], {"n": row[1]}, permissions=row[2])
            t.rows.append(row)

    cases, diffs = 0, []
    made = iter(range(1000, 100000))

    def check(what, expected, fn):
        nonlocal cases
        cases += 1
        try:
            got = fn()
        except AppwriteException as e:
            got = ("error", e.code, e.type)
        if got != expected:
            diffs.append((what, expected, got))

    def ids(page):
        return (page.total, [r.id for r in page.rows])

    def list_cases(ident, tdb, t):
        readable = t.readable(ident.roles)
        rid = [r[0] for r in readable]
        check((ident.name, t.id, "list"), (len(rid), rid[:25]), lambda: ids(tdb.list_rows("pm", t.id)))
        check((ident.name, t.id, "list limit offset"), (len(rid), rid[2:5]),
              lambda: ids(tdb.list_rows("pm", t.id, queries=[Query.limit(3), Query.offset(2)])))
        if readable:
            at = rng.randrange(len(readable))
            check((ident.name, t.id, "cursor", rid[at]), (len(rid), rid[at + 1:at + 5]),
                  lambda: ids(tdb.list_rows("pm", t.id, queries=[Query.cursor_after(rid[at]), Query.limit(4)])))
        # A row the caller may not read is no cursor (Appwrite loads the cursor unchecked; here
        # its existence is not given away).
        hidden = [r[0] for r in t.rows if r[0] not in rid]
        if hidden:
            check((ident.name, t.id, "cursor hidden"), ("error", 400, "general_cursor_not_found"),
                  lambda: ids(tdb.list_rows("pm", t.id, queries=[Query.cursor_after(hidden[0])])))
        k = rng.randint(0, 1000)
        flt = sorted([r for r in readable if r[1] > k], key=lambda r: -r[1])
        check((ident.name, t.id, "filter order", k), (len(flt), [r[0] for r in flt[:5]]),
              lambda: ids(tdb.list_rows("pm", t.id, queries=[Query.greater_than("n", k), Query.order_desc("n"), Query.limit(5)])))

    for ident in identities:
        tdb = TablesDB(ident.client)
        for t in tables:
            # Gets.
            for row in t.rows:
                expected = row[0] if t.may("read", ident.roles, row) else ("error", 404, "row_not_found")
                check((ident.name, t.id, "get", row[0]), expected,
                      lambda: tdb.get_row("pm", t.id, row[0]).id)
            # Lists: totals, limits, offsets, cursors and filters count only readable rows. A
            # table without row security that does not grant read refuses to list at all (as
            # Appwrite's database does); a get there is a 404 like any unreadable row.
            if not t.row_security and not t.may("read", ident.roles):
                refused = ("error", 401, "user_unauthorized")
                check((ident.name, t.id, "list refused"), refused, lambda: ids(tdb.list_rows("pm", t.id)))
                check((ident.name, t.id, "list refused with queries"), refused,
                      lambda: ids(tdb.list_rows("pm", t.id, queries=[Query.greater_than("n", 5), Query.limit(2)])))
            else:
                list_cases(ident, tdb, t)
            # Updates, each to a new value (kept in the reference when it is allowed).
            for row in t.rows:
                allowed = t.may("update", ident.roles, row)
                expected = row[0] if allowed else ("error", 401, "user_unauthorized")
                n = next(made)
                check((ident.name, t.id, "update", row[0]), expected,
                      lambda: tdb.update_row("pm", t.id, row[0], {"n": n}).id)
                if allowed:
                    row[1] = n
            # Creates: the table decides; a user may grant only roles it holds.
            new_id = f"{ident.name}-{t.id}"
            if t.may("create", ident.roles):
                own = sorted(r for r in ident.roles if r.startswith("user:"))
                given = [perm("read", "any")] + ([perm("update", own[0])] if own else [])
                n = next(made)
                check((ident.name, t.id, "create"), new_id,
                      lambda: tdb.create_row("pm", t.id, new_id, {"n": n}, permissions=given).id)
                t.rows.append([new_id, n, given])
                foreign = next(p for p in ["user:someone-else", "team:nobody"] if p not in ident.roles)
                check((ident.name, t.id, "create foreign grant"), ("error", 401, "user_unauthorized"),
                      lambda: tdb.create_row("pm", t.id, new_id + "x", {"n": next(made)}, permissions=[perm("read", foreign)]).id)
            else:
                check((ident.name, t.id, "create"), ("error", 401, "user_unauthorized"),
                      lambda: tdb.create_row("pm", t.id, new_id, {"n": next(made)}).id)

    # Deletes last: an allowed one removes the row for everyone after.
    for ident in identities:
        tdb = TablesDB(ident.client)
        for t in tables:
            for row in list(t.rows):
                allowed = t.may("delete", ident.roles, row)
                expected = "deleted" if allowed else ("error", 401, "user_unauthorized")
                check((ident.name, t.id, "delete", row[0]), expected,
                      lambda: (tdb.delete_row("pm", t.id, row[0]), "deleted")[1])
                if allowed:
                    t.rows.remove(row)
    # What is left is exactly what the reference kept.
    for t in tables:
        left = db.list_rows("pm", t.id, queries=[Query.limit(100)])
        check(("key", t.id, "left"), [r[0] for r in t.rows], lambda: [r.id for r in left.rows])

    assert cases >= 5000, cases
    assert not diffs, f"{len(diffs)} of {cases} cases differ (seed {SEED}); first: {diffs[:10]}"
