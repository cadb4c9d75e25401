"""A project's auth settings, set by the operator with `basalt project auth` (the console's
`PATCH /v1/projects/{id}/auth/...` routes), and what they change for the SDK's flows: the user
limit, session length and count, password rules, and sign-in methods turned off."""
import json
import subprocess
import time
from datetime import datetime

import pytest
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.services.account import Account
from appwrite.services.users import Users

from harness import ROOT_KEY, basalt_bin, http

PASSWORD = "correct-horse-battery"


def raises(code, kind, fn, *args, **kwargs):
    with pytest.raises(AppwriteException) as e:
        fn(*args, **kwargs)
    assert (e.value.code, e.value.type) == (code, kind), e.value.message
    return e.value


def cli(node, *args):
    r = subprocess.run([basalt_bin(), "project", *args, "--endpoint", node.endpoint, "--root-key", ROOT_KEY],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def guest(project):
    return Client().set_endpoint(project.node.url()).set_project(project.id)


def test_operator_settings_shape_the_flows(project):
    p = cli(project.node, "get", "--id", project.id)
    assert (p["authDuration"], p["authLimit"], p["authSessionsLimit"]) == (31536000, 0, 10)
    assert p["authAnonymous"] is True and p["authPasswordDictionary"] is False
    p = cli(project.node, "auth", "--id", project.id, "--duration", "3600", "--limit", "3",
            "--max-sessions", "2", "--password-history", "2", "--password-dictionary", "on",
            "--personal-data", "on", "--disable", "anonymous,jwt")
    assert (p["authDuration"], p["authLimit"], p["authSessionsLimit"], p["authPasswordHistory"]) == (3600, 3, 2, 2)
    assert p["authPasswordDictionary"] and p["authPersonalDataCheck"]
    assert (p["authAnonymous"], p["authJWT"], p["authEmailPassword"]) == (False, False, True)

    g = Account(guest(project))
    # Password rules, before anything is made.
    raises(400, "general_argument_invalid", g.create, user_id=ID.unique(), email="a@example.com", password="password123")
    raises(400, "password_personal_data", g.create, user_id=ID.unique(), email="lovelace@example.com",
           password="my-lovelace-pass", name="Ada")
    raises(400, "password_personal_data", g.create, user_id="ada-user", email="z@example.com",
           password="xx-ada-user-xx")
    assert Users(project.client()).list().total == 0
    u = g.create(user_id=ID.unique(), email="ada@example.com", password=PASSWORD, name="Ada")

    # Sessions last an hour, and a user holds two at most.
    admin = Account(project.client())
    for _ in range(3):
        s = admin.create_email_password_session(email="ada@example.com", password=PASSWORD)
    left = (datetime.fromisoformat(s.expire) - datetime.fromisoformat(s.createdat)).total_seconds()
    assert abs(left - 3600) < 5, (s.createdat, s.expire)
    me = Account(guest(project).set_session(s.secret))
    assert me.list_sessions().total == 2

    # Methods turned off.
    raises(501, "user_auth_method_unsupported", g.create_anonymous_session)
    status, _, body = http("POST", project.node.url() + "/account/jwts", {},
                           {"X-Appwrite-Project": project.id, "X-Appwrite-Session": s.secret})
    assert (status, body["type"]) == (501, "user_auth_method_unsupported")
    cli(project.node, "auth", "--id", project.id, "--enable", "anonymous")
    g.create_anonymous_session()  # the second user

    # Password history: the last two may not come back.
    me.update_password(password="second-password-2", old_password=PASSWORD)
    raises(400, "password_recently_used", me.update_password, password=PASSWORD, old_password="second-password-2")
    me.update_password(password="third-password-3", old_password="second-password-2")
    me.update_password(password=PASSWORD, old_password="third-password-3")  # three back: allowed
    raises(400, "password_recently_used", Users(project.client()).update_password, user_id=u.id, password="third-password-3")

    # The user limit: three users, the third sign-up is the last; a key is not limited.
    g.create(user_id=ID.unique(), email="bo@example.com", password=PASSWORD)
    raises(400, "user_count_exceeded", g.create, user_id=ID.unique(), email="cy@example.com", password=PASSWORD)
    raises(400, "user_count_exceeded", Account(guest(project)).create_anonymous_session)
    Users(project.client()).create(user_id=ID.unique(), email="di@example.com", password=PASSWORD)
    assert Users(project.client()).list().total == 4

    # Bad settings are refused and change nothing: by the CLI before it sends any (a good one
    # before a bad one is not applied either)...
    for args in (["--limit", "9", "--max-sessions", "0"], ["--password-history", "21"], ["--duration", "5"],
                 ["--enable", "jwt", "--disable", "jwt"]):
        r = subprocess.run([basalt_bin(), "project", "auth", "--id", project.id, *args, "--endpoint",
                            project.node.endpoint, "--root-key", ROOT_KEY], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr, (args, r.stderr)
    assert cli(project.node, "get", "--id", project.id)["authLimit"] == 3
    # ...and by the API (Appwrite 1.9.2's names, `total` and `enabled`, are taken too).
    root = {"X-Appwrite-Project": "console", "X-Appwrite-Key": ROOT_KEY}
    for setting, body in (("max-sessions", {"limit": 0}), ("max-sessions", {"total": 101}),
                          ("password-history", {"limit": 21}), ("duration", {"duration": 5})):
        status, _, got = http("PATCH", project.node.url() + f"/projects/{project.id}/auth/{setting}", body, root)
        assert (status, got["type"]) == (400, "general_argument_invalid"), (setting, body, got)
    status, _, got = http("PATCH", project.node.url() + f"/projects/{project.id}/auth/password-history", {"total": 3}, root)
    assert status == 200 and got["authPasswordHistory"] == 3, got
    status, _, got = http("PATCH", project.node.url() + f"/projects/{project.id}/auth/anonymous", {"enabled": False}, root)
    assert status == 200 and got["authAnonymous"] is False, got
    status, _, body = http("PATCH", project.node.url() + f"/projects/{project.id}/auth/limit", {"limit": 5},
                           {"X-Appwrite-Project": "console", "X-Appwrite-Key": project.key})
    assert status == 401, body
    assert cli(project.node, "get", "--id", project.id)["authSessionsLimit"] == 2
