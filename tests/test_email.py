"""The email flows end to end through a real SMTP server (aiosmtpd on 127.0.0.1): email
verification, password recovery, magic URLs, email codes and team invitations, driven with the
official Python SDK, their links and codes read from the delivered messages; and the outbox's
durability across a leader's death in a three-node cluster."""
import email
import email.policy
import os
import re
import socket
import threading
import time
import urllib.parse

import pytest
from aiosmtpd.controller import Controller
from appwrite.client import Client
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.services.account import Account
from appwrite.services.teams import Teams
from appwrite.services.users import Users

from harness import Node, TestCluster, create_project, http

PASSWORD = "correct-horse-battery"


class Inbox:
    """Collects what the SMTP server receives."""

    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.cond:
            self.messages.append((list(envelope.rcpt_tos), msg))
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, rcpt, n=1, timeout=30):
        """The first `n` messages to `rcpt`, waiting for them."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                got = [m for to, m in self.messages if rcpt in to]
                if len(got) >= n:
                    return got[:n]
                left = deadline - time.time()
                assert left > 0, f"no email to {rcpt} after {timeout}s: {len(got)} of {n}"
                self.cond.wait(left)

    def count(self, rcpt):
        with self.cond:
            return sum(1 for to, _ in self.messages if rcpt in to)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp(port):
    inbox = Inbox()
    c = Controller(inbox, hostname="127.0.0.1", port=port)
    c.start()
    return c, inbox


def smtp_args(port):
    return [
        "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-tls", "none",
        "--smtp-sender", "Shop <shop@example.test>",
    ]


@pytest.fixture(scope="module")
def smtp():
    c, inbox = start_smtp(free_port())
    yield c, inbox
    c.stop()


@pytest.fixture(scope="module")
def mail_node(smtp):
    c, _ = smtp
    n = Node(extra_args=smtp_args(c.port)).start()
    yield n
    if n.proc.poll() is None:
        n.stop()
    errors = n.unexpected_errors()
    assert not errors, "node logged unexpected errors:\n" + "\n".join(errors)


_n = [0]


class P:
    def __init__(self, node):
        _n[0] += 1
        self.node = node
        self.id = f"mail{os.getpid()}x{_n[0]}"
        self.key = create_project(node, self.id)

    def client(self):
        return Client().set_endpoint(self.node.url()).set_project(self.id).set_key(self.key)

    def guest(self):
        return Client().set_endpoint(self.node.url()).set_project(self.id)


@pytest.fixture
def mp(mail_node):
    return P(mail_node)


def raises(code, kind, fn, *args, **kwargs):
    with pytest.raises(AppwriteException) as e:
        fn(*args, **kwargs)
    assert (e.value.code, e.value.type) == (code, kind), e.value.message
    return e.value


def body(msg):
    return msg.get_body(preferencelist=("plain",)).get_content()


def link(msg):
    """The first http link of a message's text part, and its query parameters."""
    url = re.search(r"https?://\S+", body(msg)).group(0)
    return url, {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def signed_in(p, email_addr, password=PASSWORD):
    s = Account(p.client()).create_email_password_session(email=email_addr, password=password)
    return s, p.guest().set_session(s.secret)


def test_email_verification(mp, smtp):
    _, inbox = smtp
    u = Account(mp.guest()).create(user_id=ID.unique(), email="vera@example.com", password=PASSWORD, name="Vera")
    _, me = signed_in(mp, "vera@example.com")
    # Only pages on localhost, the public host or a web platform may receive the link.
    e = raises(400, "general_argument_invalid", Account(me).create_email_verification, url="https://evil.example/v")
    assert "Register your new client (evil.example)" in e.message
    t = Account(me).create_email_verification(url="http://localhost:3000/verify")
    assert t.userid == u.id and t.secret == ""
    [msg] = inbox.wait_for("vera@example.com")
    assert msg["Subject"] == f"Account Verification for {mp.id}"
    assert "Shop" in msg["From"] and "shop@example.test" in msg["From"]
    url, q = link(msg)
    assert url.startswith("http://localhost:3000/verify?")
    assert q["userId"] == u.id and len(q["secret"]) == 256 and "expire" in q
    assert msg.get_body(preferencelist=("html",)) is not None
    # A wrong secret, or one for another user, changes nothing.
    raises(401, "user_invalid_token", Account(mp.guest()).update_email_verification, user_id=u.id, secret="0" * 256)
    raises(404, "user_not_found", Account(mp.guest()).update_email_verification, user_id="nobody", secret=q["secret"])
    assert Account(me).get().emailverification is False
    # The link works without a session (as Appwrite's `public` route), once.
    done = Account(mp.guest()).update_email_verification(user_id=u.id, secret=q["secret"])
    assert done.userid == u.id and done.secret == ""
    assert Account(me).get().emailverification is True
    raises(401, "user_invalid_token", Account(mp.guest()).update_email_verification, user_id=u.id, secret=q["secret"])
    raises(409, "user_email_already_verified", Account(me).create_email_verification, url="http://localhost/v")
    # A guest may not ask for one.
    raises(401, "general_unauthorized_scope", Account(mp.guest()).create_email_verification, url="http://localhost/v")


def test_links_go_only_where_a_browser_would_go_and_die_with_the_address(mp, smtp):
    _, inbox = smtp
    Account(mp.guest()).create(user_id=ID.unique(), email="wes@example.com", password=PASSWORD)
    g = Account(mp.guest())
    # A browser reads `\` as `/`: this page is on evil.example, whatever follows the `@`.
    for url in ["https://evil.example\\@localhost/", "https://localhost@evil.example/",
                "http://localhost/x\nInjected: header", "javascript:alert(1)//localhost"]:
        e = raises(400, "general_argument_invalid", g.create_recovery, email="wes@example.com", url=url)
        assert "Invalid `url` param: Invalid URI." in e.message, e.message
    assert inbox.count("wes@example.com") == 0
    # A link sent to an address is void once the address changes: it would verify the new one.
    _, me = signed_in(mp, "wes@example.com")
    Account(me).create_email_verification(url="http://127.0.0.1:8000/v")
    [msg] = inbox.wait_for("wes@example.com")
    url, q = link(msg)
    assert url.startswith("http://127.0.0.1:8000/v?")
    Account(me).update_email(email="wes2@example.com", password=PASSWORD)
    raises(401, "user_invalid_token", g.update_email_verification, user_id=q["userId"], secret=q["secret"])
    assert Account(me).get().emailverification is False


def test_password_recovery(mp, smtp):
    _, inbox = smtp
    u = Account(mp.guest()).create(user_id=ID.unique(), email="rob@example.com", password=PASSWORD)
    _, me = signed_in(mp, "rob@example.com")
    raises(404, "user_not_found", Account(mp.guest()).create_recovery, email="nobody@example.com", url="http://localhost/r")
    t = Account(mp.guest()).create_recovery(email="Rob@Example.com", url="http://localhost/recover")
    assert t.userid == u.id and t.secret == ""
    [msg] = inbox.wait_for("rob@example.com")
    assert msg["Subject"] == f"Password Reset for {mp.id}"
    _, q = link(msg)
    assert q["userId"] == u.id and len(q["secret"]) == 256
    g = Account(mp.guest())
    raises(400, "general_argument_invalid", g.update_recovery, user_id=u.id, secret=q["secret"], password="short")
    raises(401, "user_invalid_token", g.update_recovery, user_id=u.id, secret="f" * 256, password="new-password-1")
    # A recovery secret does not sign in.
    raises(401, "user_invalid_token", Account(mp.client()).create_session, user_id=u.id, secret=q["secret"])
    Account(me).get()  # nothing changed yet
    done = g.update_recovery(user_id=u.id, secret=q["secret"], password="new-password-1")
    assert done.userid == u.id
    # The new password holds, the old does not, and every old session ended.
    raises(401, "general_unauthorized_scope", Account(me).get)
    raises(401, "user_invalid_credentials", signed_in, mp, "rob@example.com")
    _, me2 = signed_in(mp, "rob@example.com", "new-password-1")
    assert Account(me2).get().emailverification is True
    raises(401, "user_invalid_token", g.update_recovery, user_id=u.id, secret=q["secret"], password="another-pass-2")
    # A blocked user may not recover.
    Users(mp.client()).update_status(user_id=u.id, status=False)
    raises(403, "user_blocked", g.create_recovery, email="rob@example.com", url="http://localhost/r")


def test_magic_url_signs_up_and_in(mp, smtp):
    _, inbox = smtp
    g = Account(mp.guest())
    uid = ID.unique()
    t = g.create_magic_url_token(user_id=uid, email="max@example.com", url="http://localhost/magic", phrase=True)
    assert t.secret == "" and re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", t.phrase), t.phrase
    [msg] = inbox.wait_for("max@example.com")
    assert msg["Subject"] == f"{mp.id} Login"
    assert t.phrase in body(msg)
    _, q = link(msg)
    assert set(q) == {"userId", "secret", "expire", "project"} and q["project"] == mp.id
    assert len(q["secret"]) == 64
    user = Users(mp.client()).get(user_id=q["userId"])
    assert user.email == "max@example.com" and user.emailverification is False
    assert q["userId"] != "unique()" and len(q["userId"]) >= 20
    s = Account(mp.client()).create_session(user_id=q["userId"], secret=q["secret"])
    assert s.provider == "magic-url" and s.factors == ["email"] and s.userid == q["userId"]
    assert Users(mp.client()).get(user_id=q["userId"]).emailverification is True
    raises(401, "user_invalid_token", Account(mp.client()).create_session, user_id=q["userId"], secret=q["secret"])
    # Asked again for a known address: the same user, whatever `userId` says.
    t2 = g.create_magic_url_token(user_id="someoneelse", email="max@example.com", url="http://localhost/magic")
    assert t2.userid == q["userId"] and t2.phrase == ""
    raises(400, "general_argument_invalid", g.create_magic_url_token, user_id=ID.unique(), email="m2@example.com", url="https://phish.example/")


def test_email_code_signs_in(mp, smtp):
    _, inbox = smtp
    g = Account(mp.guest())
    t = g.create_email_token(user_id=ID.unique(), email="olga@example.com")
    assert t.secret == ""
    [msg] = inbox.wait_for("olga@example.com")
    assert msg["Subject"] == f"OTP for {mp.id} Login"
    text = body(msg)
    found = re.search(r"^(\d{6})\s*$", text, re.M)
    assert found, text
    code = found.group(1)
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    raises(401, "user_invalid_token", g.create_session, user_id=t.userid, secret=wrong)
    s = Account(mp.client()).create_session(user_id=t.userid, secret=code)
    assert s.provider == "token" and s.factors == ["email"]
    raises(401, "user_invalid_token", g.create_session, user_id=t.userid, secret=code)


def test_team_invitations(mp, smtp):
    _, inbox = smtp
    Account(mp.guest()).create(user_id=ID.unique(), email="owner@example.com", password=PASSWORD, name="Olive")
    _, owner = signed_in(mp, "owner@example.com")
    team = Teams(owner).create(team_id=ID.unique(), name="Crew")
    raises(400, "general_argument_invalid", Teams(owner).create_membership, team_id=team.id, roles=["dev"], email="bob@example.com")
    m = Teams(owner).create_membership(
        team_id=team.id, roles=["dev"], email="Bob@Example.com", url="http://localhost/join", name="Bob")
    assert m.confirm is False and m.roles == ["dev"] and m.joined == ""
    [msg] = inbox.wait_for("bob@example.com")
    assert msg["Subject"] == f"Invitation to Crew Team at {mp.id}"
    assert "Olive" in body(msg) and "Bob" in body(msg)
    _, q = link(msg)
    assert q["membershipId"] == m.id and q["teamId"] == team.id and len(q["secret"]) == 256
    assert q["teamName"] == "Crew"
    bob = Users(mp.client()).get(user_id=q["userId"])
    assert bob.email == "bob@example.com" and bob.name == "Bob"
    # Not a member until accepted: the team counts one.
    assert Teams(owner).get(team_id=team.id).total == 1
    # A non-owner may not invite.
    Account(mp.guest()).create(user_id=ID.unique(), email="eve@example.com", password=PASSWORD)
    _, eve = signed_in(mp, "eve@example.com")
    raises(404, "team_not_found", Teams(eve).create_membership, team_id=team.id, roles=[], email="x@example.com", url="http://localhost/j")
    g = Teams(mp.guest())
    raises(401, "team_invalid_secret", g.update_membership_status, team_id=team.id, membership_id=m.id, user_id=q["userId"], secret="a" * 256)
    raises(404, "membership_not_found", g.update_membership_status, team_id=team.id, membership_id="nope", user_id=q["userId"], secret=q["secret"])
    # Accepting signs the invitee in (cookie), verifies the address, and counts the member.
    status, headers, got = http("PATCH", f"{mp.node.url()}/teams/{team.id}/memberships/{m.id}/status",
                                {"userId": q["userId"], "secret": q["secret"]}, {"X-Appwrite-Project": mp.id})
    assert status == 200, got
    assert got["confirm"] is True and got["joined"]
    assert f"a_session_{mp.id}=" in headers.get("set-cookie", "")
    assert Users(mp.client()).get(user_id=q["userId"]).emailverification is True
    assert Teams(owner).get(team_id=team.id).total == 2
    raises(409, "membership_already_confirmed", g.update_membership_status, team_id=team.id, membership_id=m.id, user_id=q["userId"], secret=q["secret"])
    # Inviting a confirmed member again is refused.
    raises(409, "membership_already_confirmed", Teams(owner).create_membership,
           team_id=team.id, roles=[], email="bob@example.com", url="http://localhost/join")


def test_secrets_never_reach_the_state(mp, smtp):
    """Emailed secrets are derived when sent: neither the log nor the store holds one."""
    _, inbox = smtp
    Account(mp.guest()).create_magic_url_token(user_id=ID.unique(), email="dora@example.com", url="http://localhost/m")
    [msg] = inbox.wait_for("dora@example.com")
    _, q = link(msg)
    secret = q["secret"].encode()
    for root, _, files in os.walk(mp.node.data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret not in fh.read(), f


def test_without_smtp_the_flows_are_refused(project):
    g = Client().set_endpoint(project.node.url()).set_project(project.id)
    raises(503, "general_smtp_disabled", Account(g).create_recovery, email="a@example.com", url="http://localhost/r")
    raises(503, "general_smtp_disabled", Account(g).create_magic_url_token, user_id=ID.unique(), email="a@example.com", url="http://localhost/r")
    assert Users(project.client()).list().total == 0


def test_queued_email_survives_the_leader(tmp_path):
    """An email accepted while the SMTP server is down stays queued in Raft state: the leader
    that could not send it dies, the SMTP server comes up, and the next leader sends it once."""
    port = free_port()
    cluster = TestCluster(3, extra_args=smtp_args(port)).start()
    cluster.expect_faults()
    controller = None
    try:
        n1 = cluster.nodes[0]
        pid = "mailcluster"
        key = create_project(n1, pid)
        follower = next(n for n in cluster.nodes if n is not cluster.leader())
        g = Client().set_endpoint(follower.url()).set_project(pid)
        Account(g).create(user_id=ID.unique(), email="queue@example.com", password=PASSWORD)
        Account(g).create_recovery(email="queue@example.com", url="http://localhost/r")
        time.sleep(1.5)  # the leader tries, fails (nothing listens), and schedules a retry
        old = cluster.leader()
        old.kill()
        controller, inbox = start_smtp(port)
        [msg] = inbox.wait_for("queue@example.com", timeout=45)
        _, q = link(msg)
        live = next(n for n in cluster.nodes if n is not old)
        Account(Client().set_endpoint(live.url()).set_project(pid)).update_recovery(
            user_id=q["userId"], secret=q["secret"], password="recovered-pass-1")
        time.sleep(2)
        assert inbox.count("queue@example.com") == 1
        assert Users(Client().set_endpoint(live.url()).set_project(pid).set_key(key)).list().total == 1
        old.start()
        cluster.assert_consistent()
    finally:
        if controller:
            controller.stop()
        cluster.shutdown()


def test_mfa_challenge_by_email(mp, smtp):
    _, inbox = smtp
    users = Users(mp.client())
    u = users.create(user_id=ID.unique(), email="mfa@example.com", password=PASSWORD)
    _, me = signed_in(mp, "mfa@example.com")
    # Only a verified address is a factor.
    raises(400, "user_email_not_verified", Account(me).create_mfa_challenge, factor="email")
    users.update_email_verification(user_id=u.id, email_verification=True)
    users.update_mfa(user_id=u.id, mfa=True)
    _, short = signed_in(mp, "mfa@example.com")
    raises(401, "user_more_factors_required", Account(short).get)
    ch = Account(short).create_mfa_challenge(factor="email")
    [msg] = inbox.wait_for("mfa@example.com")
    assert msg["Subject"] == f"Verification Code for {mp.id}"
    text = body(msg)
    code = re.search(r"^(\d{6})\s*$", text, re.M).group(1)
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    raises(401, "user_invalid_token", Account(short).update_mfa_challenge, challenge_id=ch.id, otp=wrong)
    s = Account(short).update_mfa_challenge(challenge_id=ch.id, otp=code)
    assert s.factors == ["password", "email"]
    assert Account(short).get().id == u.id
