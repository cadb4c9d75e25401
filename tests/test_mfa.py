"""MFA through the official Python SDK: a TOTP authenticator, the `mfa` flag and what a
session short of factors may do, challenges by TOTP and by recovery code, recovery codes,
and the Users service's MFA routes."""
import base64
import hashlib
import hmac
import struct
import time

import pytest
from appwrite.client import Client
from appwrite.enums.authentication_factor import AuthenticationFactor
from appwrite.enums.authenticator_type import AuthenticatorType
from appwrite.exception import AppwriteException
from appwrite.id import ID
from appwrite.services.account import Account
from appwrite.services.users import Users

from harness import http

PASSWORD = "correct-horse-battery"


def totp(secret_b32, at=None, step=0):
    """RFC 6238 (SHA-1, 6 digits, 30 s), written here so the test does not trust the server's."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // 30) + step
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 15
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def raises(code, kind, fn, *args, **kwargs):
    with pytest.raises(AppwriteException) as e:
        fn(*args, **kwargs)
    assert (e.value.code, e.value.type) == (code, kind), e.value.message
    return e.value


def guest(project):
    return Client().set_endpoint(project.node.url()).set_project(project.id)


def sign_in(project, email):
    s = Account(project.client()).create_email_password_session(email=email, password=PASSWORD)
    return s, Account(guest(project).set_session(s.secret))


def test_totp_mfa_end_to_end(project):
    u = Account(guest(project)).create(user_id=ID.unique(), email="mia@example.com", password=PASSWORD)
    _, first = sign_in(project, "mia@example.com")
    f = first.list_mfa_factors()
    assert (f.totp, f.email, f.phone, f.recoverycode) == (False, False, False, False)

    t = first.create_mfa_authenticator(type=AuthenticatorType.TOTP)
    assert len(t.secret) == 103 and t.secret.isupper()
    assert t.uri == f"otpauth://totp/{project.id}%3Amia%40example.com?issuer={project.id}&secret={t.secret}"
    # Asked again before it is verified: a new secret.
    t = first.create_mfa_authenticator(type=AuthenticatorType.TOTP)
    wrong = f"{(int(totp(t.secret)) + 1) % 1_000_000:06d}"
    raises(401, "user_invalid_token", first.update_mfa_authenticator, type=AuthenticatorType.TOTP, otp=wrong)
    assert first.update_mfa_authenticator(type=AuthenticatorType.TOTP, otp=totp(t.secret)).id == u.id
    raises(409, "user_authenticator_already_verified", first.create_mfa_authenticator, type=AuthenticatorType.TOTP)
    assert first.list_mfa_factors().totp is True

    codes = first.create_mfa_recovery_codes().recoverycodes
    assert len(codes) == 6 and all(len(c) == 10 for c in codes) and len(set(codes)) == 6
    raises(409, "user_recovery_codes_already_exists", first.create_mfa_recovery_codes)
    # Reading them again needs a challenge passed in this session.
    raises(401, "user_challenge_required", first.get_mfa_recovery_codes)

    assert first.update_mfa(mfa=True).mfa is True
    # The session that turned MFA on holds both factors: it goes on working.
    assert first.get().mfa is True

    # A new sign-in has one factor: only the challenge routes (and sign-out) are open to it.
    s2, second = sign_in(project, "mia@example.com")
    assert s2.factors == ["password"]
    raises(401, "user_more_factors_required", second.get)
    status, _, body = http("POST", project.node.url() + "/account/jwts", {},
                           {"X-Appwrite-Project": project.id, "X-Appwrite-Session": s2.secret})
    assert (status, body["type"]) == (401, "user_more_factors_required")
    assert second.list_mfa_factors().totp is True
    ch = second.create_mfa_challenge(factor=AuthenticationFactor.TOTP)
    assert ch.userid == u.id and ch.expire
    raises(401, "user_invalid_token", second.update_mfa_challenge, challenge_id=ch.id, otp=wrong)
    raises(401, "user_invalid_token", second.update_mfa_challenge, challenge_id="nochallenge", otp=totp(t.secret))
    done = second.update_mfa_challenge(challenge_id=ch.id, otp=totp(t.secret))
    assert done.factors == ["password", "totp"] and done.mfaupdatedat
    assert second.get().id == u.id
    # The challenge is used up.
    raises(401, "user_invalid_token", second.update_mfa_challenge, challenge_id=ch.id, otp=totp(t.secret))

    # A recovery code is a factor once (the SDK spells it `recoverycode`).
    _, third = sign_in(project, "mia@example.com")
    ch = third.create_mfa_challenge(factor=AuthenticationFactor.RECOVERYCODE)
    assert third.update_mfa_challenge(challenge_id=ch.id, otp=codes[0]).factors == ["password", "recoveryCode"]
    _, fourth = sign_in(project, "mia@example.com")
    ch = fourth.create_mfa_challenge(factor=AuthenticationFactor.RECOVERYCODE)
    raises(401, "user_invalid_token", fourth.update_mfa_challenge, challenge_id=ch.id, otp=codes[0])
    raises(401, "user_more_factors_required", fourth.get)
    # The recent challenge lets the session read (what is left of) and remake its codes.
    assert second.get_mfa_recovery_codes().recoverycodes == codes[1:]
    fresh = second.update_mfa_recovery_codes().recoverycodes
    assert len(fresh) == 6 and not set(fresh) & set(codes)

    # Removing the authenticator needs a recent challenge too.
    raises(401, "user_challenge_required", first.delete_mfa_authenticator, type=AuthenticatorType.TOTP)
    second.delete_mfa_authenticator(type=AuthenticatorType.TOTP)
    raises(404, "user_authenticator_not_found", second.delete_mfa_authenticator, type=AuthenticatorType.TOTP)
    # With no second factor left, one factor is enough again (MFA stays on, as in Appwrite).
    assert fourth.get().mfa is True


def test_users_service_mfa_and_jwts(project):
    users = Users(project.client())
    u = users.create(user_id=ID.unique(), email="kai@example.com", password=PASSWORD)
    _, me = sign_in(project, "kai@example.com")
    t = me.create_mfa_authenticator(type=AuthenticatorType.TOTP)
    me.update_mfa_authenticator(type=AuthenticatorType.TOTP, otp=totp(t.secret))
    assert users.update_mfa(user_id=u.id, mfa=True).mfa is True
    f = users.list_mfa_factors(user_id=u.id)
    assert (f.totp, f.recoverycode) == (True, False)
    raises(404, "user_recovery_codes_not_found", users.get_mfa_recovery_codes, user_id=u.id)
    raises(404, "user_recovery_codes_not_found", users.update_mfa_recovery_codes, user_id=u.id)
    made = users.create_mfa_recovery_codes(user_id=u.id).recoverycodes
    assert len(made) == 6 and users.get_mfa_recovery_codes(user_id=u.id).recoverycodes == made
    raises(409, "user_recovery_codes_already_exists", users.create_mfa_recovery_codes, user_id=u.id)
    again = users.update_mfa_recovery_codes(user_id=u.id).recoverycodes
    assert again != made
    # A JWT is not held to MFA (only a session with every factor could have made one; a key
    # may make one for the user).
    _, short = sign_in(project, "kai@example.com")
    raises(401, "user_more_factors_required", short.get)
    jwt = users.create_jwt(user_id=u.id).jwt
    assert Account(guest(project).set_jwt(jwt)).get().id == u.id
    users.delete_mfa_authenticator(user_id=u.id, type=AuthenticatorType.TOTP)
    assert users.list_mfa_factors(user_id=u.id).totp is False
    assert short.get().id == u.id
    raises(404, "user_not_found", users.list_mfa_factors, user_id="nobody")


def test_an_unverified_authenticator_is_no_factor(project):
    """An authenticator added but never verified (say, by whoever once had the password) does
    not pass a challenge once MFA is on through another factor."""
    users = Users(project.client())
    u = users.create(user_id=ID.unique(), email="ivy@example.com", password=PASSWORD)
    _, me = sign_in(project, "ivy@example.com")
    planted = me.create_mfa_authenticator(type=AuthenticatorType.TOTP)
    users.update_email_verification(user_id=u.id, email_verification=True)
    users.update_mfa(user_id=u.id, mfa=True)
    _, short = sign_in(project, "ivy@example.com")
    ch = short.create_mfa_challenge(factor=AuthenticationFactor.TOTP)
    raises(401, "user_invalid_token", short.update_mfa_challenge, challenge_id=ch.id, otp=totp(planted.secret))
    raises(401, "user_more_factors_required", short.get)
    raises(400, "general_argument_invalid", short.create_mfa_challenge, factor="sms")
