//! A project's auth policy as the API applies it (`model::auth::AuthSettings`, the
//! operator's): sign-in methods turned off, and the password rules — the most common
//! passwords, passwords made of the user's own data, and the user's recent passwords. A key is
//! held to the password rules but not to the methods (as in Appwrite). The user limit, session
//! length and sessions per user are applied in apply, against the committed settings.

use crate::auth::Ctx;
use crate::error::ApiError;
use crate::AppState;
use model::auth::{AuthSettings, Credential};
use model::{msg, ErrorCode};

/// Refuses a sign-in method the project turned off (a key is not refused).
pub(crate) fn require_method(ctx: &Ctx, method: &str) -> Result<(), ApiError> {
    if ctx.is_key() || ctx.view.auth_settings(&ctx.project)?.allows(method) {
        return Ok(());
    }
    let name = match method {
        "email-password" => "Email / Password",
        "magic-url" => "Magic URL",
        "email-otp" => "Email OTP",
        "anonymous" => "Anonymous",
        "invites" => "Invites",
        "jwt" => "JWT",
        "phone" => "Phone",
        other => other,
    };
    Err(ApiError::new(
        ErrorCode::UserAuthMethodUnsupported,
        msg!("{} authentication is disabled for this project", name),
    ))
}

/// What a password may not contain when the project checks personal data.
#[derive(Default)]
pub(crate) struct Personal<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub phone: &'a str,
}

/// Very common passwords (lower case), refused when the project turns the dictionary on.
const COMMON: &[&str] = &[
    "123456",
    "123456789",
    "12345678",
    "password",
    "qwerty",
    "qwerty123",
    "1234567890",
    "1234567",
    "111111",
    "123123",
    "abc123",
    "password1",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "000000",
    "iloveyou",
    "qwertyuiop",
    "123321",
    "654321",
    "666666",
    "987654321",
    "7777777",
    "121212",
    "superman",
    "1qaz2wsx",
    "password123",
    "password12",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "letmein",
    "welcome",
    "welcome1",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "master",
    "sunshine",
    "princess",
    "shadow",
    "michael",
    "jennifer",
    "trustno1",
    "starwars",
    "whatever",
    "freedom",
    "hello123",
    "charlie",
    "aa123456",
    "qazwsxedc",
    "asdfghjkl",
    "zxcvbnm",
    "zxcvbnm123",
    "11111111",
    "00000000",
    "12341234",
    "88888888",
    "87654321",
    "123qwe123",
    "qwer1234",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "changeme",
    "secret123",
    "admin123",
    "administrator",
    "computer",
    "internet",
    "mustang",
    "michelle",
    "jordan23",
    "harley",
    "ranger",
    "buster",
    "soccer",
    "hockey",
    "killer",
    "batman",
    "ginger",
    "pepper",
    "hunter2",
    "loveme",
    "lovely",
    "flower",
    "pokemon",
    "naruto",
    "cookie",
    "summer",
    "whatever1",
    "asdf1234",
    "asdfasdf",
    "abcd1234",
    "abcdefgh",
    "a1b2c3d4",
    "azerty",
    "azertyuiop",
    "passwort",
    "motdepasse",
    "contraseña",
    "senha123",
    "1qazxsw2",
    "qweasdzxc",
    "google",
    "default",
    "access",
    "master123",
    "test1234",
    "testtest",
];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(model::Error::invalid(m))
}

/// Checks a new password against the project's rules: not a very common one, not made of
/// `personal` data (`None` where that rule does not apply: a recovery, as in Appwrite), not
/// one of `history` (the user's latest argon2id hashes).
pub(crate) async fn check_password(
    s: &AppState,
    settings: &AuthSettings,
    password: &str,
    personal: Option<Personal<'_>>,
    history: &[String],
) -> Result<(), ApiError> {
    let lower = password.to_lowercase();
    if settings.password_dictionary && COMMON.contains(&lower.as_str()) {
        return Err(invalid(
            "Invalid `password` param: Password must be at least 8 characters and not in the list of the most common passwords.",
        ));
    }
    if let (true, Some(p)) = (settings.personal_data_check, personal) {
        let local = p.email.split('@').next().unwrap_or("");
        let phone = p.phone.trim_start_matches('+');
        let found = [p.id, p.email, local, p.name, phone]
            .iter()
            .map(|v| v.to_lowercase())
            .any(|v| v.len() >= 3 && lower.contains(&v));
        if found {
            return Err(ApiError::new(
                ErrorCode::PasswordPersonalData,
                "The password you are trying to use contains references to your name, email, phone or userID. For your security, please choose a different password and try again.",
            ));
        }
    }
    let keep = settings.password_history as usize;
    for hash in history.iter().take(keep) {
        let old = Credential {
            algo: "argon2".into(),
            hash: hash.clone(),
            options: String::new(),
        };
        if s.hasher.verify(password.to_string(), Some(old)).await? {
            return Err(ApiError::new(
                ErrorCode::PasswordRecentlyUsed,
                "The password you are trying to use is similar to your previous password. For your security, please choose a different password and try again.",
            ));
        }
    }
    Ok(())
}

/// `check_password` for a new password of the existing user `u`: its own data and its
/// password history.
pub(crate) async fn check_user_password(
    s: &AppState,
    ctx: &Ctx,
    password: &str,
    u: &model::auth::User,
) -> Result<(), ApiError> {
    let personal = Personal {
        id: &u.id,
        email: &u.email,
        name: &u.name,
        phone: &u.phone,
    };
    let settings = ctx.view.auth_settings(&ctx.project)?;
    check_password(s, &settings, password, Some(personal), &u.password_history).await
}
