"""Accounts, sessions, JWTs and users through the official Python SDK and raw HTTP, and
permissions on rows for signed-in users and guests."""
import base64
import json
import urllib.parse

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.permission import Permission
from appwrite.query import Query
from appwrite.role import Role
from appwrite.services.account import Account
from appwrite.services.tables_db import TablesDB
from appwrite.services.users import Users

from harness import http

PASSWORD = "correct-horse-battery"


def guest(project, node=None):
    return Client().set_endpoint((node or project.node).url()).set_project(project.id)


def raises(code, kind, fn, *args, **kwargs):
    with pytest.raises(AppwriteException) as e:
        fn(*args, **kwargs)
    assert (e.value.code, e.value.type) == (code, kind), e.value.message
    return e.value


def sign_up(project, email, password=PASSWORD, name="Ada"):
    return Account(guest(project)).create(user_id=ID.unique(), email=email, password=password, name=name)


def sign_in(project, email, password=PASSWORD, node=None):
    """The SSR flow: a key-holding client makes the session and gets its secret, which the
    user's own client then sends as `X-Appwrite-Session`."""
    admin = project.client()
    if node is not None:
        admin.set_endpoint(node.url())
    s = Account(admin).create_email_password_session(email=email, password=password)
    assert s.secret and s.provider == "email" and s.factors == ["password"]
    return s, guest(project, node).set_session(s.secret)


def test_sign_up_sign_in_and_sessions(project):
    u = sign_up(project, "Ada@Example.com")
    assert u.email == "ada@example.com" and u.name == "Ada" and u.status is True
    assert u.emailverification is False and u.labels == [] and u.prefs.data == {}
    assert "password" not in u.to_dict() or not u.to_dict().get("password")
    s, me = sign_in(project, "ada@example.com")
    acc = Account(me)
    got = acc.get()
    assert got.id == u.id and got.email == "ada@example.com"
    sessions = acc.list_sessions()
    assert sessions.total == 1 and sessions.sessions[0].current is True
    assert sessions.sessions[0].secret == ""
    assert acc.get_session("current").id == s.id
    ext = acc.update_session("current")
    assert ext.id == s.id and ext.expire >= s.expire
    # A second session; deleting one leaves the other working.
    s2, me2 = sign_in(project, "ada@example.com")
    assert Account(me2).list_sessions().total == 2
    acc.delete_session(s2.id)
    raises(401, "general_unauthorized_scope", Account(me2).get)
    assert acc.get().id == u.id
    acc.delete_session("current")
    e = raises(401, "general_unauthorized_scope", acc.get)
    assert e.message == 'User (role: guests) missing scopes (["account"])'


def test_session_cookies_and_fallback_header(project):
    sign_up(project, "cookie@example.com")
    url = project.node.url()
    h = {"X-Appwrite-Project": project.id}
    status, hdrs, body = http("POST", url + "/account/sessions/email", {"email": "cookie@example.com", "password": PASSWORD}, h)
    assert status == 201, body
    assert body["secret"] == "" and body["current"] is True
    cookies = hdrs["set-cookie"]
    assert f"a_session_{project.id.lower()}_legacy=" in cookies and "httponly" in cookies.lower()
    fallback = json.loads(hdrs["x-fallback-cookies"])
    value = fallback[f"a_session_{project.id}"]
    decoded = json.loads(base64.b64decode(value))
    assert set(decoded) == {"id", "secret"} and len(decoded["secret"]) == 256
    cookie_value = cookies.split(f"a_session_{project.id.lower()}_legacy=")[1].split(";")[0]
    assert urllib.parse.unquote(cookie_value) == value
    assert "samesite=none" in cookies.lower() and "secure" in cookies.lower()
    for extra in ({"Cookie": f"a_session_{project.id}={cookie_value}"},
                  {"Cookie": f"a_session_{project.id}_legacy={cookie_value}"},
                  {"X-Fallback-Cookies": json.dumps({f"a_session_{project.id}": value})},
                  {"X-Appwrite-Session": value}):
        status, _, me = http("GET", url + "/account", None, {**h, **extra})
        assert status == 200 and me["email"] == "cookie@example.com", (extra, me)
    # A session value that names nothing makes the caller a guest.
    forged = base64.b64encode(json.dumps({"id": decoded["id"], "secret": "0" * 256}).encode()).decode()
    for bad in (forged, "not-base64!", ""):
        status, _, err = http("GET", url + "/account", None, {**h, "X-Appwrite-Session": bad})
        assert (status, err["type"]) == (401, "general_unauthorized_scope")
    # Signing in again while signed in is refused; signing out clears the cookies.
    status, _, err = http("POST", url + "/account/sessions/email", {"email": "cookie@example.com", "password": PASSWORD}, {**h, "X-Appwrite-Session": value})
    assert (status, err["type"]) == (401, "user_session_already_exists")
    status, hdrs, _ = http("DELETE", url + "/account/sessions/current", {}, {**h, "X-Appwrite-Session": value})
    assert status == 204 and "expires=Thu, 01 Jan 1970" in hdrs["set-cookie"]
    assert hdrs["x-fallback-cookies"] == "[]"
    status, _, _ = http("GET", url + "/account", None, {**h, "X-Appwrite-Session": value})
    assert status == 401


def test_bad_sign_up_and_sign_in_input_changes_nothing(project):
    acc = Account(guest(project))
    sign_up(project, "taken@example.com")
    raises(409, "user_already_exists", sign_up, project, "TAKEN@example.com")
    raises(400, "general_argument_invalid", sign_up, project, "not-an-email")
    e = raises(400, "general_argument_invalid", sign_up, project, "short@example.com", password="short")
    assert e.message == "Invalid `password` param: Password must be between 8 and 256 characters long."
    raises(400, "general_argument_invalid", sign_up, project, "noname@example.com", name="")
    raises(400, "general_argument_invalid", acc.create, user_id="-bad", email="x@example.com", password=PASSWORD)
    for email, password in (("taken@example.com", "wrong-password"), ("nobody@example.com", PASSWORD)):
        e = raises(401, "user_invalid_credentials", acc.create_email_password_session, email=email, password=password)
        assert e.message == "Invalid credentials. Please check the email and password."
    users = Users(project.client()).list()
    assert users.total == 1 and [u.email for u in users.users] == ["taken@example.com"]
    # A guest has no account scope.
    raises(401, "general_unauthorized_scope", acc.get)
    raises(401, "general_unauthorized_scope", Users(guest(project)).list)


def create_jwt(project, headers):
    """`Account.createJWT` (a client SDK call; the Python SDK has no such method)."""
    status, _, body = http("POST", project.node.url() + "/account/jwts", {}, {"X-Appwrite-Project": project.id, **headers})
    return status, body


def hs256(key, claims):
    import hashlib
    import hmac
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = enc(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    body = enc(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{enc(sig)}"


def test_jwts(project):
    u = sign_up(project, "jwt@example.com")
    # Before the project ever made a JWT there is no secret: one signed with an empty key (or
    # any other) is refused, not taken as the user's.
    import time
    forged = hs256(b"", {"userId": u.id, "sessionId": "", "exp": int(time.time()) + 600})
    raises(401, "user_jwt_invalid", Account(guest(project).set_jwt(forged)).get)
    s, me = sign_in(project, "jwt@example.com")
    status, body = create_jwt(project, {"X-Appwrite-Session": s.secret})
    assert status == 201, body
    jwt = body["jwt"]
    as_jwt = guest(project).set_jwt(jwt)
    assert Account(as_jwt).get().id == u.id
    status, body = create_jwt(project, {"X-Appwrite-JWT": jwt})
    assert (status, body["type"]) == (403, "user_jwt_creation_denied")
    header, payload, sig = jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["userId"] == u.id and claims["sessionId"] == s.id
    assert claims["exp"] - 900 <= int(__import__("time").time()) <= claims["exp"]
    # Tampered, forged, garbage.
    forged_claims = base64.urlsafe_b64encode(json.dumps({**claims, "userId": "someone"}).encode()).rstrip(b"=").decode()
    for bad in (f"{header}.{forged_claims}.{sig}", jwt[:-2] + ("AA" if not jwt.endswith("AA") else "BB"), "garbage"):
        e = raises(401, "user_jwt_invalid", Account(guest(project).set_jwt(bad)).get)
        assert e.message.startswith("Failed to verify JWT. Invalid token: ")
    # A JWT and a session together are refused.
    raises(403, "user_jwt_and_cookie_set", Account(guest(project).set_jwt(jwt).set_session(s.secret)).get)
    # A key makes one for the user's newest session; ending the session ends the JWT.
    jwt2 = Users(project.client()).create_jwt(u.id, session_id="recent").jwt
    assert Account(guest(project).set_jwt(jwt2)).get().id == u.id
    Account(me).delete_sessions()
    for j in (jwt, jwt2):
        raises(401, "general_unauthorized_scope", Account(guest(project).set_jwt(j)).get)
    raises(400, "general_argument_invalid", Users(project.client()).create_jwt, u.id, duration=3601)


def test_account_changes(project):
    u = sign_up(project, "me@example.com")
    sign_up(project, "other@example.com")
    s, me = sign_in(project, "me@example.com")
    s_old, other_session = sign_in(project, "me@example.com")
    acc = Account(me)
    assert acc.update_name("Ada L.").name == "Ada L."
    assert acc.update_prefs({"theme": "dark", "n": 3}).prefs.data == {"theme": "dark", "n": 3}
    assert acc.get_prefs().data == {"theme": "dark", "n": 3}
    raises(401, "user_invalid_credentials", acc.update_password, password="new-password-1", old_password="wrong-password")
    raises(401, "user_invalid_credentials", acc.update_password, password="new-password-1")
    acc.update_password(password="new-password-1", old_password=PASSWORD)
    # The other session ended with the change; this one goes on.
    raises(401, "general_unauthorized_scope", Account(other_session).get)
    assert acc.get().id == u.id
    raises(401, "user_invalid_credentials", Account(guest(project)).create_email_password_session, email="me@example.com", password=PASSWORD)
    sign_in(project, "me@example.com", "new-password-1")
    raises(409, "user_target_already_exists", acc.update_email, email="other@example.com", password="new-password-1")
    raises(401, "user_invalid_credentials", acc.update_email, email="me2@example.com", password="wrong-password")
    assert acc.update_email(email="ME2@example.com", password="new-password-1").email == "me2@example.com"
    assert acc.update_phone(phone="+15550001111", password="new-password-1").phone == "+15550001111"
    raises(400, "general_argument_invalid", acc.update_phone, phone="5550001111", password="new-password-1")
    # Blocking oneself: every later request is refused.
    assert acc.update_status().status is False
    raises(403, "user_blocked", acc.get)
    raises(403, "user_blocked", Account(project.client()).create_email_password_session, email="me2@example.com", password="new-password-1")


def test_anonymous_session_becomes_a_real_account(project):
    url = project.node.url()
    h = {"X-Appwrite-Project": project.id}
    status, hdrs, body = http("POST", url + "/account/sessions/anonymous", {}, h)
    assert status == 201 and body["provider"] == "anonymous" and body["factors"] == ["anonymous"]
    value = json.loads(hdrs["x-fallback-cookies"])[f"a_session_{project.id}"]
    acc = Account(guest(project).set_session(value))
    me = acc.get()
    assert me.email == "" and me.passwordupdate == ""
    converted = acc.update_email(email="anon@example.com", password=PASSWORD)
    assert converted.email == "anon@example.com" and converted.id == me.id and converted.passwordupdate
    sign_in(project, "anon@example.com")


def test_users_service(project):
    users = Users(project.client())
    a = users.create(ID.custom("ada"), email="ada@example.com", password=PASSWORD, name="Ada")
    assert a.id == "ada" and a.hash == "argon2" and a.password.startswith("$argon2id$")
    users.create(ID.custom("bob"), email="bob@example.com", phone="+15550002222", name="Bob")
    users.create(ID.unique(), name="Nobody")
    raises(409, "user_already_exists", users.create, ID.custom("ada"), email="new@example.com")
    raises(409, "user_already_exists", users.create, ID.unique(), email="ada@example.com")
    raises(409, "user_already_exists", users.create, ID.unique(), phone="+15550002222")
    assert users.list().total == 3
    assert [u.id for u in users.list(queries=[Query.equal("name", ["Bob"])]).users] == ["bob"]
    assert [u.id for u in users.list(search="ada").users] == ["ada"]
    assert [u.name for u in users.list(queries=[Query.order_desc("name")]).users] == ["Nobody", "Bob", "Ada"]
    # An empty email or phone removes it (and frees it for another user).
    b = users.update_phone(user_id="bob", number="")
    assert b.phone == "" and b.email == "bob@example.com"
    assert users.update_email(user_id="bob", email="").email == ""
    users.update_phone(user_id="bob", number="+15550002222")
    users.update_email(user_id="bob", email="bob@example.com")
    raises(400, "general_argument_invalid", users.update_email, user_id="bob", email="not-an-email")
    assert [u.id for u in users.list(queries=[Query.order_asc("name"), Query.limit(1)]).users] == ["ada"]
    e = raises(400, "general_argument_invalid", users.list, queries=[Query.equal("password", ["x"])])
    assert "Attribute not found in schema: password" in e.message
    assert users.get("bob").phone == "+15550002222"
    raises(404, "user_not_found", users.get, "nobody-here")
    assert users.update_labels("ada", ["vip", "beta"]).labels == ["vip", "beta"]
    raises(400, "general_argument_invalid", users.update_labels, "ada", ["not ok"])
    assert users.update_email_verification("ada", True).emailverification is True
    assert users.update_name("ada", "").name == ""
    assert users.update_prefs("ada", {"a": 1}).data == {"a": 1}
    assert users.get_prefs("ada").data == {"a": 1}
    # Sessions made by a key sign the user in; deleting the user ends them.
    s = users.create_session("ada")
    assert s.provider == "server" and s.secret
    me = guest(project).set_session(s.secret)
    assert Account(me).get().id == "ada"
    assert users.list_sessions("ada").total == 1
    users.update_status("ada", False)
    raises(403, "user_blocked", Account(me).get)
    users.update_status("ada", True)
    assert Account(me).get().status is True
    users.delete_session("ada", s.id)
    raises(401, "general_unauthorized_scope", Account(me).get)
    users.delete("bob")
    raises(404, "user_not_found", users.get, "bob")
    assert users.list().total == 2


@pytest.fixture
def notes(project):
    t = project.tables()
    t.create(database_id="db", name="db")
    # Anyone signed in may create; each row says who may read it.
    t.create_table("db", "notes", "Notes", permissions=[Permission.create(Role.users())], row_security=True)
    t.create_varchar_column("db", "notes", "text", 64, True)
    t.create_mediumtext_column("db", "notes", "body", False)
    t.create_table("db", "board", "Board", permissions=[Permission.read(Role.any())])
    t.create_varchar_column("db", "board", "text", 64, True)
    return t


def test_row_permissions_for_users_and_guests(project, notes):
    a = sign_up(project, "a@example.com")
    b = sign_up(project, "b@example.com")
    _, as_a = sign_in(project, "a@example.com")
    _, as_b = sign_in(project, "b@example.com")
    ta, tb, tg = TablesDB(as_a), TablesDB(as_b), TablesDB(guest(project))
    mine = ta.create_row("db", "notes", "mine", {"text": "a's"})
    assert mine.permissions == [f'read("user:{a.id}")', f'update("user:{a.id}")', f'delete("user:{a.id}")']
    ta.create_row("db", "notes", "public", {"text": "all"}, permissions=[Permission.read(Role.any())])
    e = raises(401, "user_unauthorized", ta.create_row, "db", "notes", "x", {"text": "x"}, permissions=[Permission.read(Role.user(b.id))])
    assert e.message == f"Permissions must be one of: (any, users, user:{a.id}, user:{a.id}/unverified, users/unverified)"
    raises(401, "user_unauthorized", tg.create_row, "db", "notes", "g", {"text": "g"})
    # A body over the edge's unauthenticated limit (64 KiB) is read for a signed-in user.
    big = ta.create_row("db", "notes", "big", {"text": "big", "body": "x" * 100_000})
    assert len(big.data["body"]) == 100_000
    ta.delete_row("db", "notes", "big")
    # Reads: b sees the public row only; lists and totals count only readable rows.
    raises(404, "row_not_found", tb.get_row, "db", "notes", "mine")
    assert tb.get_row("db", "notes", "public").id == "public"
    got = tb.list_rows("db", "notes")
    assert (got.total, [r.id for r in got.rows]) == (1, ["public"])
    # A cursor naming a row b may not read is not found for b.
    raises(400, "general_cursor_not_found", tb.list_rows, "db", "notes", queries=[Query.cursor_after("mine")])
    # Transactions: test_users_transactions_are_their_own.
    got = ta.list_rows("db", "notes", queries=[Query.limit(1)])
    assert (got.total, [r.id for r in got.rows]) == (2, ["mine"])
    assert tg.list_rows("db", "notes").total == 1
    # Writes: b may not change or delete a's row; a may.
    raises(401, "user_unauthorized", tb.update_row, "db", "notes", "mine", {"text": "b was here"})
    raises(401, "user_unauthorized", tb.delete_row, "db", "notes", "mine")
    assert ta.update_row("db", "notes", "mine", {"text": "edited"}).data["text"] == "edited"
    # Table-level read lets everyone list; nobody but a key may write.
    project.tables().create_row("db", "board", "r1", {"text": "hello"})
    assert tg.list_rows("db", "board").total == 1 and tg.get_row("db", "board", "r1").data["text"] == "hello"
    raises(401, "user_unauthorized", ta.create_row, "db", "board", "r2", {"text": "no"})
    # Bulk changes by query are a key's.
    with pytest.raises(AppwriteException) as e:
        ta.delete_rows("db", "notes")
    assert e.value.code == 401
    assert project.tables().list_rows("db", "notes").total == 2
    ta.delete_row("db", "notes", "mine")
    assert project.tables().list_rows("db", "notes").total == 1
    # A disabled table does not exist for users and guests; a key still sees it.
    project.tables().update_table("db", "notes", "Notes", enabled=False)
    raises(404, "table_not_found", ta.list_rows, "db", "notes")
    raises(404, "table_not_found", ta.create_row, "db", "notes", "late", {"text": "x"})
    assert project.tables().list_rows("db", "notes").total == 1


@pytest.fixture(scope="module")
def cluster():
    from harness import TestCluster
    c = TestCluster(3).start()
    yield c
    c.shutdown()
    errors = c.unexpected_errors()
    assert not errors, "nodes logged unexpected errors:\n" + "\n".join(errors)


def test_sessions_and_jwts_hold_on_every_node(cluster):
    from conftest import Project
    from harness import create_project
    n1, n2, n3 = cluster.nodes
    pid = "authcluster"
    project = Project(n1, pid, create_project(n1, pid))
    u = Account(guest(project, n1)).create(user_id=ID.unique(), email="c@example.com", password=PASSWORD)
    # Signed in through node 2 right after signing up through node 1.
    s, _ = sign_in(project, "c@example.com", node=n2)
    status, body = create_jwt(Project(n3, pid, project.key), {"X-Appwrite-Session": s.secret})
    assert status == 201, body
    for n in (n1, n2, n3):
        assert Account(guest(project, n).set_session(s.secret)).get().id == u.id
        assert Account(guest(project, n).set_jwt(body["jwt"])).get().id == u.id
    # Ended through node 3: refused at once on node 1, session and JWT alike.
    Account(guest(project, n3).set_session(s.secret)).delete_session("current")
    raises(401, "general_unauthorized_scope", Account(guest(project, n1).set_session(s.secret)).get)
    raises(401, "general_unauthorized_scope", Account(guest(project, n1).set_jwt(body["jwt"])).get)
    # A user blocked through node 2 is refused on node 3.
    s2, _ = sign_in(project, "c@example.com", node=n1)
    Users(Client().set_endpoint(n2.url()).set_project(pid).set_key(project.key)).update_status(u.id, False)
    raises(403, "user_blocked", Account(guest(project, n3).set_session(s2.secret)).get)
    cluster.assert_consistent()


def test_mfa_and_auth_settings_hold_on_every_node(cluster):
    """MFA turned on through one node binds sessions on the others at once; a challenge made
    on one node is answered on another; the operator's settings bind every node."""
    import subprocess
    from appwrite.enums.authentication_factor import AuthenticationFactor
    from appwrite.enums.authenticator_type import AuthenticatorType
    from conftest import Project
    from harness import ROOT_KEY, basalt_bin, create_project
    from test_mfa import totp
    n1, n2, n3 = cluster.nodes
    pid = "mfacluster"
    project = Project(n1, pid, create_project(n1, pid))
    u = Account(guest(project, n1)).create(user_id=ID.unique(), email="m@example.com", password=PASSWORD)
    full, _ = sign_in(project, "m@example.com", node=n1)
    short, _ = sign_in(project, "m@example.com", node=n2)
    me1 = Account(guest(project, n1).set_session(full.secret))
    t = me1.create_mfa_authenticator(type=AuthenticatorType.TOTP)
    me1.update_mfa_authenticator(type=AuthenticatorType.TOTP, otp=totp(t.secret))
    me1.update_mfa(mfa=True)
    # The password-only session made on node 2 is refused on node 3 at once.
    raises(401, "user_more_factors_required", Account(guest(project, n3).set_session(short.secret)).get)
    ch = Account(guest(project, n2).set_session(short.secret)).create_mfa_challenge(factor=AuthenticationFactor.TOTP)
    Account(guest(project, n3).set_session(short.secret)).update_mfa_challenge(challenge_id=ch.id, otp=totp(t.secret))
    assert Account(guest(project, n1).set_session(short.secret)).get().id == u.id
    # Settings changed through node 3 bind a sign-up through node 1.
    r = subprocess.run([basalt_bin(), "project", "auth", "--id", pid, "--disable", "anonymous",
                        "--endpoint", n3.endpoint, "--root-key", ROOT_KEY], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    raises(501, "user_auth_method_unsupported", Account(guest(project, n1)).create_anonymous_session)
    cluster.assert_consistent()


def test_teams_memberships_and_team_permissions(project):
    from appwrite.services.teams import Teams
    owner = sign_up(project, "owner@example.com")
    member = sign_up(project, "member@example.com")
    sign_up(project, "outsider@example.com")
    _, as_owner = sign_in(project, "owner@example.com")
    _, as_member = sign_in(project, "member@example.com")
    _, as_outsider = sign_in(project, "outsider@example.com")
    t = Teams(as_owner).create("crew", "Crew", roles=["admin"])
    assert (t.id, t.name, t.total) == ("crew", "Crew", 1)
    raises(409, "team_already_exists", Teams(as_owner).create, "crew", "Again")
    mine = Teams(as_owner).list_memberships("crew")
    assert mine.total == 1 and sorted(mine.memberships[0].roles) == ["admin", "owner"]
    # Only a key adds members without email (no SMTP configured): 503 for a user.
    raises(503, "general_smtp_disabled", Teams(as_owner).create_membership, "crew", ["editor"], user_id=member.id, url="http://localhost/join")
    admin = Teams(project.client())
    m = admin.create_membership("crew", ["editor"], user_id=member.id)
    assert m.confirm is True and m.userid == member.id and m.username == "Ada"
    raises(409, "membership_already_confirmed", admin.create_membership, "crew", ["editor"], user_id=member.id)
    assert admin.get("crew").total == 2
    # Members read the team; outsiders do not see it; only owners change it.
    assert Teams(as_member).get("crew").name == "Crew"
    assert Teams(as_member).list().total == 1 and Teams(as_outsider).list().total == 0
    raises(404, "team_not_found", Teams(as_outsider).get, "crew")
    raises(401, "user_unauthorized", Teams(as_member).update_name, "crew", "Mine now")
    assert Teams(as_owner).update_name("crew", "Crew 2").name == "Crew 2"
    raises(401, "user_unauthorized", Teams(as_member).update_membership, "crew", m.id, ["owner"])
    # Team roles reach row permissions.
    tables = project.tables()
    tables.create(database_id="db", name="db")
    tables.create_table("db", "docs", "Docs", permissions=[Permission.read(Role.team("crew", "editor"))])
    tables.create_varchar_column("db", "docs", "text", 16, False)
    tables.create_row("db", "docs", "d1", {"text": "x"})
    assert TablesDB(as_member).list_rows("db", "docs").total == 1
    raises(401, "user_unauthorized", TablesDB(as_outsider).list_rows, "db", "docs")
    raises(401, "user_unauthorized", TablesDB(as_owner).list_rows, "db", "docs")
    Teams(as_owner).update_membership("crew", [x for x in mine.memberships][0].id, ["admin", "owner", "editor"])
    assert TablesDB(as_owner).list_rows("db", "docs").total == 1
    # A member may leave; the count follows; then the team can be deleted by its owner.
    Teams(as_member).delete_membership("crew", m.id)
    raises(401, "user_unauthorized", TablesDB(as_member).list_rows, "db", "docs")
    assert admin.get("crew").total == 1
    Teams(as_owner).delete("crew")
    raises(404, "team_not_found", admin.get, "crew")
    assert Users(project.client()).get(owner.id).id == owner.id


def test_abuse_limits(tmp_path):
    """Appwrite's limits, on: 10 sign-in attempts an hour per email (a success forgets the
    failures), 10 sign-ups an hour per address, with the X-RateLimit headers; keys are not
    limited."""
    from conftest import Project
    from harness import Node, create_project
    node = Node(base_dir=str(tmp_path))
    node.abuse_limits = True
    node.start()
    try:
        pid = "abuse"
        project = Project(node, pid, create_project(node, pid))
        url, h = node.url(), {"X-Appwrite-Project": pid}
        status, hdrs, _ = http("POST", url + "/account", {"userId": "unique()", "email": "a@example.com", "password": PASSWORD}, h)
        assert status == 201 and hdrs["x-ratelimit-limit"] == "10" and hdrs["x-ratelimit-remaining"] == "9"
        body = {"email": "a@example.com", "password": "wrong-password"}
        for i in range(9):
            status, hdrs, _ = http("POST", url + "/account/sessions/email", body, h)
            assert status == 401 and hdrs["x-ratelimit-remaining"] == str(9 - i)
        # A success resets the count of that email's attempts.
        status, hdrs, _ = http("POST", url + "/account/sessions/email", {**body, "password": PASSWORD}, h)
        assert status == 201
        for _ in range(10):
            status, _, _ = http("POST", url + "/account/sessions/email", body, h)
            assert status == 401
        status, hdrs, err = http("POST", url + "/account/sessions/email", body, h)
        assert (status, err["type"]) == (429, "general_rate_limit_exceeded")
        assert hdrs["x-ratelimit-remaining"] == "0" and int(hdrs["x-ratelimit-reset"]) > 0
        # Even the right password is refused until the window ends; another email is not.
        status, _, _ = http("POST", url + "/account/sessions/email", {**body, "password": PASSWORD}, h)
        assert status == 429
        status, _, _ = http("POST", url + "/account/sessions/email", {"email": "b@example.com", "password": PASSWORD}, h)
        assert status == 401
        # Sign-ups from one address: 10 an hour.
        for i in range(9):
            status, _, _ = http("POST", url + "/account", {"userId": "unique()", "email": f"u{i}@example.com", "password": PASSWORD}, h)
            assert status == 201
        status, _, err = http("POST", url + "/account", {"userId": "unique()", "email": "late@example.com", "password": PASSWORD}, h)
        assert (status, err["type"]) == (429, "general_rate_limit_exceeded")
        # A key is not limited.
        s = Account(project.client()).create_email_password_session(email="a@example.com", password=PASSWORD)
        assert s.secret
    finally:
        node.stop()


def test_platforms_and_cors(project):
    import subprocess
    from harness import ROOT_KEY, basalt_bin
    url, pid = project.node.url(), project.id
    sign_up(project, "web@example.com")
    body = {"email": "web@example.com", "password": PASSWORD}
    app, evil = "https://app.example.com", "https://evil.example.net"
    # An unknown page: its writes are refused, its reads get no CORS headers.
    status, hdrs, err = http("POST", url + "/account/sessions/email", body, {"X-Appwrite-Project": pid, "Origin": app})
    assert (status, err["type"]) == (403, "general_unknown_origin") and "access-control-allow-origin" not in hdrs
    status, hdrs, _ = http("GET", url + "/account", None, {"X-Appwrite-Project": pid, "Origin": app})
    assert status == 401 and "access-control-allow-origin" not in hdrs
    status, hdrs, _ = http("OPTIONS", f"{url}/account/sessions/email?project={pid}", None,
                           {"Origin": app, "Access-Control-Request-Method": "POST",
                            "Access-Control-Request-Headers": "content-type,x-appwrite-project"})
    assert status == 204 and "access-control-allow-origin" not in hdrs
    # Registered through the CLI: the page may sign in, with credentials.
    out = subprocess.run([basalt_bin(), "platform", "add", "--project", pid, "--hostname", "*.example.com",
                          "--endpoint", project.node.endpoint, "--root-key", ROOT_KEY],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    platform = json.loads(out.stdout)
    assert platform["hostname"] == "*.example.com" and platform["type"] == "web"
    status, hdrs, _ = http("OPTIONS", f"{url}/account/sessions/email?project={pid}", None,
                           {"Origin": app, "Access-Control-Request-Method": "POST",
                            "Access-Control-Request-Headers": "content-type,x-appwrite-project"})
    assert status == 204 and hdrs["access-control-allow-origin"] == app
    assert hdrs["access-control-allow-credentials"] == "true" and "POST" in hdrs["access-control-allow-methods"]
    status, hdrs, s = http("POST", url + "/account/sessions/email", body, {"X-Appwrite-Project": pid, "Origin": app})
    assert status == 201 and hdrs["access-control-allow-origin"] == app
    assert "X-Fallback-Cookies" in hdrs["access-control-expose-headers"]
    # Other sites stay refused; localhost is always allowed; a key is not a browser's.
    status, _, err = http("POST", url + "/account", {"userId": "unique()", "email": "x@example.com", "password": PASSWORD},
                          {"X-Appwrite-Project": pid, "Origin": evil})
    assert (status, err["type"]) == (403, "general_unknown_origin")
    status, hdrs, _ = http("POST", url + "/account", {"userId": "unique()", "email": "l@example.com", "password": PASSWORD},
                           {"X-Appwrite-Project": pid, "Origin": "http://localhost:3000"})
    assert status == 201 and hdrs["access-control-allow-origin"] == "http://localhost:3000"
    status, _, _ = http("POST", url + "/users", {"userId": "unique()", "email": "k@example.com"},
                        {**project.headers(), "Origin": evil})
    assert status == 201
    # A request naming two projects (one in the URL, one in the header) is refused: the CORS
    # check and the handler could otherwise judge different projects.
    status, hdrs, err = http("POST", f"{url}/account/jwts?project=other", {}, {"X-Appwrite-Project": pid, "Origin": app})
    assert (status, err["type"]) == (400, "general_argument_invalid") and "access-control-allow-origin" not in hdrs
    status, _, err = http("GET", f"{url}/account?project={pid}&project=other", None, {})
    assert (status, err["type"]) == (400, "general_argument_invalid")
    # Removed, the page is refused again.
    status, _, listed = http("GET", f"{url}/projects/{pid}/platforms", None, {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY})
    assert status == 200 and listed["total"] == 1
    status, _, _ = http("DELETE", f"{url}/projects/{pid}/platforms/{platform['$id']}", {}, {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY})
    assert status == 204
    status, _, _ = http("POST", url + "/account/sessions/email", body, {"X-Appwrite-Project": pid, "Origin": app})
    assert status == 403


def test_tokens_exchanged_for_sessions(project):
    users = Users(project.client())
    u = users.create(ID.unique(), email="tok@example.com", name="Tok")
    t = users.create_token(u.id, length=12, expire=120)
    assert len(t.secret) == 12 and t.userid == u.id and t.expire > t.createdat
    acc = Account(guest(project))
    raises(401, "user_invalid_token", acc.create_session, user_id=u.id, secret="0" * 12)
    other = users.create(ID.unique(), email="other-tok@example.com")
    raises(401, "user_invalid_token", acc.create_session, user_id=other.id, secret=t.secret)
    s = acc.create_session(user_id=u.id, secret=t.secret)
    assert s.provider == "token" and s.factors == ["token"] and s.secret == ""
    # Used up: a second exchange is refused.
    raises(401, "user_invalid_token", acc.create_session, user_id=u.id, secret=t.secret)
    # A deleted user's tokens go with it: a new user given the same id inherits none.
    t2 = users.create_token(u.id, length=12)
    users.delete(u.id)
    users.create(u.id, email="tok2@example.com")
    raises(401, "user_invalid_token", acc.create_session, user_id=u.id, secret=t2.secret)
    raises(400, "general_argument_invalid", users.create_token, u.id, length=3)
    raises(400, "general_argument_invalid", users.create_token, u.id, expire=30)
    assert users.list_sessions(u.id).total == 0


def test_imported_password_hashes_sign_in_and_become_argon2(project):
    """Appwrite's own imported users (its e2e suite's hashes of the password `appwrite`):
    each signs in with the right password only, and is stored again as argon2id."""
    from appwrite.enums.password_hash import PasswordHash
    users = Users(project.client())
    made = [
        users.create_md5_user("md5", "md5@appwrite.io", "144fa7eaa4904e8ee120651997f70dcc", name="MD5 User"),
        users.create_bcrypt_user("bcrypt", "bcrypt@appwrite.io", "$2a$15$xX/myGbFU.ZSKHSi6EHdBOySTdYm8QxBLXmOPHrYMwV0mHRBBSBOq"),
        users.create_argon2_user("argon2", "argon2@appwrite.io", "$argon2i$v=19$m=20,t=3,p=2$YXBwd3JpdGU$A/54i238ed09ZR4NwlACU5XnkjNBZU9QeOEuhjLiexI"),
        users.create_sha_user("sha512", "sha512@appwrite.io", "4243da0a694e8a2f727c8060fe0507c8fa01ca68146c76d2c190805b638c20c6bf6ba04e21f11ae138785d0bff63c416e6f87badbffad37f6dee50094cc38c70", password_version=PasswordHash.SHA512),
        users.create_scrypt_user("scrypt", "scrypt@appwrite.io", "3fdef49701bc4cfaacd551fe017283513284b4731e6945c263246ef948d3cf63b5d269c31fd697246085111a428245e24a4ddc6b64c687bc60a8910dbafc1d5b", "appwrite", 16384, 13, 2, 64),
        users.create_ph_pass_user("phpass", "phpass@appwrite.io", "$P$Br387rwferoKN7uwHZqNMu98q3U8RO."),
        users.create_scrypt_modified_user("scrypt-modified", "scrypt-modified@appwrite.io", "UlM7JiXRcQhzAGlaonpSqNSLIz475WMddOgLjej5De9vxTy48K6WtqlEzrRFeK4t0COfMhWCb8wuMHgxOFCHFQ==", "UxLMreBr6tYyjQ==", "Bw==", "XyEKE9RcTDeLEsL/RjwPDBv/RqDl8fb3gpYEOQaPihbxf1ZAtSOHCjuAAa7Q3oHpCYhXSN9tizHgVOwn6krflQ=="),
    ]
    assert [u.hash for u in made] == ["md5", "bcrypt", "argon2", "sha", "scrypt", "phpass", "scryptMod"]
    assert users.get("bcrypt").password.startswith("$2a$15$")
    acc = Account(guest(project))
    for u in made:
        raises(401, "user_invalid_credentials", acc.create_email_password_session, email=u.email, password="appwritf")
        s = acc.create_email_password_session(email=u.email, password="appwrite")
        assert s.userid == u.id
        after = users.get(u.id)
        assert after.hash == "argon2", (u.id, after.hash)
        if u.hash != "argon2":
            assert after.password.startswith("$argon2id$"), u.id
        # And the password still works, now against our hash.
        assert acc.create_email_password_session(email=u.email, password="appwrite").userid == u.id
    raises(400, "general_argument_invalid", users.create_argon2_user, "bad", "bad@appwrite.io", "not-a-phc-hash")
    raises(400, "general_argument_invalid", users.create_scrypt_user, "bad2", "bad2@appwrite.io", "00", "s", 1000, 8, 1, 64)
    # A hash whose cost would stall a node is refused at import.
    raises(400, "general_argument_invalid", users.create_scrypt_user, "bad3", "bad3@appwrite.io", "00", "s", 1 << 30, 8, 1, 64)
    raises(400, "general_argument_invalid", users.create_bcrypt_user, "bad4", "bad4@appwrite.io", "$2a$31$xX/myGbFU.ZSKHSi6EHdBOySTdYm8QxBLXmOPHrYMwV0mHRBBSBOq")


def test_account_and_user_logs(project):
    """`GET /account/logs` and `/users/{id}/logs` (the Python SDK 27 has no `listLogs`; the
    Node SDK's is driven in tests/sdk/node_flows.mjs)."""
    u = Account(guest(project)).create(user_id=ID.unique(), email="lo@example.com", password=PASSWORD, name="Lo")
    s, me = sign_in(project, "lo@example.com")
    Account(me).update_name(name="Lola")
    mine = {"X-Appwrite-Project": project.id, "X-Appwrite-Session": s.secret}

    def logs(url, headers):
        status, _, body = http("GET", project.node.url() + url, None, headers)
        assert status == 200, body
        return body

    got = logs("/account/logs", mine)
    assert [l["event"] for l in got["logs"]] == ["user.update", "session.create", "user.create"]
    assert got["total"] == 3
    top = got["logs"][0]
    assert (top["userId"], top["userEmail"], top["userName"], top["mode"]) == (u.id, "lo@example.com", "Lola", "default")
    assert top["ip"].startswith("127.0.0.1") and top["time"] and top["countryCode"] == "--"
    # The session was made by a key holder (server-side rendering): an admin's event.
    assert got["logs"][1]["mode"] == "admin"
    key = project.headers()
    q = urllib.parse.urlencode([("queries[]", Query.limit(1)), ("queries[]", Query.offset(1))])
    page = logs(f"/users/{u.id}/logs?{q}", key)
    assert page["total"] == 3 and [l["event"] for l in page["logs"]] == ["session.create"]
    bad = urllib.parse.urlencode([("queries[]", Query.equal("event", ["x"]))])
    status, _, body = http("GET", project.node.url() + f"/users/{u.id}/logs?{bad}", None, key)
    assert (status, body["type"]) == (400, "general_query_invalid"), body
    # Failures are no events; a deleted user's log goes with it.
    raises(401, "user_invalid_credentials", Account(project.client()).create_email_password_session,
           email="lo@example.com", password="wrong-password")
    assert logs("/account/logs", mine)["total"] == 3
    users = Users(project.client())
    users.delete(user_id=u.id)
    users.create(user_id=u.id, email="lo2@example.com")
    assert [l["event"] for l in logs(f"/users/{u.id}/logs", key)["logs"]] == ["user.create"]


def test_users_transactions_are_their_own(project, notes):
    """Transactions by users (Appwrite's client SDKs may use them): the maker's alone, staged
    writes checked with the user's roles at once and again at commit, reads in the
    transaction filtered like any other."""
    a = sign_up(project, "tx-a@example.com")
    sign_up(project, "tx-b@example.com")
    _, as_a = sign_in(project, "tx-a@example.com")
    _, as_b = sign_in(project, "tx-b@example.com")
    ta, tb, key = TablesDB(as_a), TablesDB(as_b), project.tables()
    tx = ta.create_transaction(ttl=60)
    assert tx.status == "pending"
    staged = ta.create_row("db", "notes", "n1", {"text": "one"}, transaction_id=tx.id)
    assert staged.id == "n1"
    ta.create_operations(tx.id, [{"action": "create", "databaseId": "db", "tableId": "notes", "rowId": "n2",
                                  "data": {"text": "two"}}])
    # Reads inside the transaction see its rows; outside, nothing yet.
    assert ta.list_rows("db", "notes", transaction_id=tx.id).total == 2
    assert ta.get_row("db", "notes", "n2", transaction_id=tx.id).data["text"] == "two"
    assert ta.list_rows("db", "notes").total == 0
    # Another user cannot see, use, read through, commit or delete it.
    assert tb.list_transactions().total == 0
    raises(404, "transaction_not_found", tb.get_transaction, tx.id)
    raises(404, "transaction_not_found", tb.create_row, "db", "notes", "x", {"text": "x"}, transaction_id=tx.id)
    raises(404, "transaction_not_found", tb.list_rows, "db", "notes", transaction_id=tx.id)
    raises(404, "transaction_not_found", tb.update_transaction, tx.id, commit=True)
    raises(404, "transaction_not_found", tb.delete_transaction, tx.id)
    raises(401, "user_unauthorized", TablesDB(guest(project)).create_transaction)
    # What the user may not write is refused when staged: a role they do not hold, a table
    # that grants them nothing, bulk actions.
    raises(401, "user_unauthorized", ta.create_row, "db", "notes", "x", {"text": "x"},
           permissions=[Permission.read(Role.any()), Permission.update(Role.team("t"))], transaction_id=tx.id)
    raises(401, "user_unauthorized", ta.create_row, "db", "board", "x", {"text": "x"}, transaction_id=tx.id)
    raises(401, "user_unauthorized", ta.create_operations, tx.id,
           [{"action": "bulkDelete", "databaseId": "db", "tableId": "notes", "data": {"queries": []}}])
    assert ta.get_transaction(tx.id).operations == 2
    assert [t.id for t in ta.list_transactions().transactions] == [tx.id]
    assert key.list_transactions().total >= 1
    done = ta.update_transaction(tx.id, commit=True)
    assert done.status == "committed"
    rows = ta.list_rows("db", "notes")
    assert sorted(r.id for r in rows.rows) == ["n1", "n2"]
    assert all(f'update("user:{a.id}")' in r.permissions for r in rows.rows)
    assert tb.list_rows("db", "notes").total == 0
    # Commit re-checks with the roles held then: a table that stopped granting create fails it.
    tx2 = ta.create_transaction()
    ta.create_row("db", "notes", "n3", {"text": "three"}, transaction_id=tx2.id)
    key.update_table("db", "notes", "Notes", permissions=[], row_security=True)
    raises(400, "transaction_failed", ta.update_transaction, tx2.id, commit=True)
    assert ta.get_transaction(tx2.id).status == "failed"
    assert key.list_rows("db", "notes").total == 2
