//! Email as the API sees it: whether this node sends any (`basalt serve --smtp-host`), which
//! pages a link may lead to, the security phrase, and the messages themselves (Appwrite's
//! default templates and placeholders). The emails are queued in Raft state by the apply that
//! makes their secret (`AuthOp::EmailToken`, `AuthOp::Invite`) and sent by the leader's mail
//! runner, which renders them here.

use crate::auth::Ctx;
use crate::error::ApiError;
use crate::params::Req;
use crate::AppState;
use model::auth::{Mail, MailKind};
use model::reader::Consistency;
use model::{msg, ErrorCode};

/// What the API knows of this node's email settings.
#[derive(Clone, Debug, Default)]
pub struct MailSettings {
    /// SMTP is configured: the email flows are open (else they answer
    /// `general_smtp_disabled`, as Appwrite without SMTP).
    pub enabled: bool,
    /// `--public-url`: the address end users reach the cluster at. Its host is one that links
    /// may lead to, besides the project's web platforms and `localhost`.
    pub public_url: Option<String>,
}

/// Refuses an email flow on a node that cannot send email.
pub(crate) fn require_smtp(s: &AppState) -> Result<(), ApiError> {
    match s.mail.enabled {
        true => Ok(()),
        false => Err(ApiError::new(
            ErrorCode::GeneralSmtpDisabled,
            "SMTP is disabled on your Appwrite instance. You can <a href=\"/docs/email-delivery\">learn more about setting up SMTP</a> in our docs.",
        )),
    }
}

/// An absolute http(s) URL as a browser reads it (`\\` is `/`, userinfo is not the host, a
/// trailing dot is dropped): its host, lower-cased, and the URL serialised again (what goes
/// into an email). `None` for anything else, or for a URL with whitespace or control
/// characters, which no email should carry.
pub fn parse_http_url(raw: &str) -> Option<(String, String)> {
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let u = url::Url::parse(raw).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = match u.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    (!host.is_empty()).then(|| (host, u.to_string()))
}

/// The host of an absolute http(s) URL (see `parse_http_url`).
pub fn url_host(raw: &str) -> Option<String> {
    parse_http_url(raw).map(|(host, _)| host)
}

/// The `name` param: a page a link in an email may open, which must be on `localhost`, on
/// the cluster's public host, or on one of the project's web platforms (as Appwrite, so that
/// no one has the cluster mail a secret to a page of theirs).
pub(crate) async fn redirect_param(
    s: &AppState,
    ctx: &Ctx,
    req: &Req,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let Some(url) = req.str_opt(name)? else {
        return Ok(None);
    };
    let invalid = |m| ApiError(model::Error::invalid(m));
    if url.len() > 2048 {
        return Err(invalid(msg!("Invalid `{}` param: Invalid URI.", name)));
    }
    let Some((host, url)) = parse_http_url(&url) else {
        return Err(invalid(msg!("Invalid `{}` param: Invalid URI.", name)));
    };
    let public = s.mail.public_url.as_deref().and_then(url_host);
    // `127.0.0.1` and `::1` are `localhost`, as in Appwrite.
    let local = ["localhost", "127.0.0.1", "::1"].contains(&host.as_str());
    if local || public.as_deref() == Some(host.as_str()) {
        return Ok(Some(url));
    }
    for consistency in [Consistency::Local, Consistency::Linearizable] {
        let view = s.backend.read(consistency).await?;
        if view
            .list_platforms(&ctx.project)?
            .iter()
            .any(|p| p.covers(&host))
        {
            return Ok(Some(url));
        }
    }
    Err(invalid(msg!(
        "Invalid `{}` param: Invalid URI. Register your new client ({}) as a new Web platform on your project console dashboard",
        name,
        host
    )))
}

/// A new email of `kind`; the apply fills in its recipient and secret.
pub(crate) fn new_mail(kind: MailKind, url: String, phrase: String) -> Mail {
    Mail::new(crate::params::new_id(), kind, url, phrase)
}

const ADJECTIVES: &[&str] = &[
    "Able", "Bold", "Brave", "Bright", "Calm", "Clever", "Cool", "Eager", "Fair", "Fancy",
    "Gentle", "Glad", "Grand", "Happy", "Jolly", "Keen", "Kind", "Lively", "Lucky", "Mighty",
    "Neat", "Nice", "Noble", "Proud", "Quick", "Quiet", "Rapid", "Sharp", "Smart", "Steady",
    "Swift", "Warm",
];
const NOUNS: &[&str] = &[
    "Badger", "Bear", "Beaver", "Bison", "Cheetah", "Dolphin", "Eagle", "Falcon", "Fox", "Gazelle",
    "Hawk", "Heron", "Koala", "Lemur", "Lion", "Lynx", "Moose", "Otter", "Owl", "Panda", "Parrot",
    "Penguin", "Puma", "Rabbit", "Raven", "Robin", "Seal", "Swan", "Tiger", "Turtle", "Whale",
    "Wolf",
];

/// A security phrase (two words): shown to the page that asked for the email and written in
/// the email, so the user can tell the email is the one they asked for.
pub(crate) fn phrase() -> String {
    use rand::seq::SliceRandom;
    let mut rng = rand::thread_rng();
    format!(
        "{} {}",
        ADJECTIVES.choose(&mut rng).expect("not empty"),
        NOUNS.choose(&mut rng).expect("not empty")
    )
}

/// A message ready for SMTP.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `url` with `params` added to its query string (kept before any `#fragment`).
pub fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    if base.ends_with('?') || base.ends_with('&') {
        sep = '\0';
    }
    for (k, v) in params {
        if sep != '\0' {
            out.push(sep);
        }
        sep = '&';
        out.push_str(k);
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(v.as_bytes()));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The parts of one of Appwrite's default templates (`emails.<kind>.*` of its English
/// locale), with its `{{placeholders}}`.
struct Template {
    subject: &'static str,
    preview: &'static str,
    hello: &'static str,
    body: &'static str,
    footer: &'static str,
    thanks: &'static str,
    signature: &'static str,
    button: Option<&'static str>,
}

fn template(kind: MailKind) -> Template {
    match kind {
        MailKind::Verification => Template {
            subject: "Account Verification for {{project}}",
            preview: "Verify your email to activate your {{project}} account.",
            hello: "Hello {{user}},",
            body: "Follow this link to verify your email address to your {{b}}{{project}}{{/b}} account.",
            footer: "If you didn\u{2019}t ask to verify this address, you can ignore this message.",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: Some("Confirm email address"),
        },
        MailKind::Recovery => Template {
            subject: "Password Reset for {{project}}",
            preview: "Reset your {{project}} password using the link.",
            hello: "Hello {{user}},",
            body: "Follow this link to reset your {{b}}{{project}}{{/b}} password.",
            footer: "If you didn't ask to reset your password, you can ignore this message.",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: Some("Reset password"),
        },
        MailKind::MagicUrl => Template {
            subject: "{{project}} Login",
            preview: "Sign in to {{project}} with your secure link. Expires in 1 hour.",
            hello: "Hello {{user}},",
            body: "Click the button below to securely sign in to your {{b}}{{project}}{{/b}} account. This link will expire in 1 hour.",
            footer: "If you are unable to sign in using the button above, please visit the following link: {{redirect}}",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: Some("Sign in to {{project}}"),
        },
        MailKind::EmailOtp => Template {
            subject: "OTP for {{project}} Login",
            preview: "Use OTP {{otp}} to sign in to {{project}}. Expires in 15 minutes.",
            hello: "Hello {{user}},",
            body: "Enter the following verification code when prompted to securely sign in to your {{b}}{{project}}{{/b}} account. This code will expire in 15 minutes.",
            footer: "If you didn't request the sign in, you can safely ignore this email.",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: None,
        },
        MailKind::MfaChallenge => Template {
            subject: "Verification Code for {{project}}",
            preview: "Use {{otp}} to verify your sign in to {{project}}. Expires in 15 minutes.",
            hello: "Hello {{user}},",
            body: "Enter the following verification code when prompted to securely sign in to your {{b}}{{project}}{{/b}} account. This code will expire in 15 minutes.",
            footer: "If you didn't request the sign in, you can safely ignore this email.",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: None,
        },
        MailKind::Invitation => Template {
            subject: "Invitation to {{team}} Team at {{project}}",
            preview: "{{owner}} invited you to join {{team}} at {{project}}",
            hello: "Hello {{user}},",
            body: "This mail was sent to you because {{b}}{{owner}}{{/b}} invited you to become a member of the {{b}}{{team}}{{/b}} team at {{b}}{{project}}{{/b}}.",
            footer: "If you are not interested, you can ignore this message.",
            thanks: "Thanks,",
            signature: "{{project}} team",
            button: Some("Accept invite to {{team}}"),
        },
    }
}

/// Fills a template's `{{placeholders}}` in one pass (a value that itself holds `{{...}}`,
/// such as a user's name, stays as it is), HTML-escaped for the HTML part; `{{b}}...{{/b}}`
/// is bold there and nothing in plain text. Unknown placeholders stay.
fn substitute(template: &str, values: &[(&str, &str)], html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = &after[..end];
        match (name, values.iter().find(|(k, _)| *k == name)) {
            ("b", _) if html => out.push_str("<strong>"),
            ("/b", _) if html => out.push_str("</strong>"),
            ("b" | "/b", _) => {}
            (_, Some((_, v))) if html => out.push_str(&escape(v)),
            (_, Some((_, v))) => out.push_str(v),
            (_, None) => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The link or code a message carries, given its (re-derived) secret.
fn redirect(mail: &Mail, project: &str, secret: &str) -> String {
    let expire = model::time::format_ms(mail.expire);
    match mail.kind {
        MailKind::EmailOtp | MailKind::MfaChallenge => String::new(),
        MailKind::Invitation => with_query(
            &mail.url,
            &[
                (
                    "membershipId",
                    mail.secret_of.split('@').next().unwrap_or(""),
                ),
                ("userId", &mail.user_id),
                ("secret", secret),
                ("teamId", &mail.team_id),
                ("teamName", &mail.team_name),
            ],
        ),
        MailKind::MagicUrl => with_query(
            &mail.url,
            &[
                ("userId", &mail.user_id),
                ("secret", secret),
                ("expire", &expire),
                ("project", project),
            ],
        ),
        MailKind::Verification | MailKind::Recovery => with_query(
            &mail.url,
            &[
                ("userId", &mail.user_id),
                ("secret", secret),
                ("expire", &expire),
            ],
        ),
    }
}

/// Renders `mail` of a project named `project_name` (id `mail.project`), whose secret is
/// `secret`, with Appwrite's default template: a plain-text and an HTML part.
pub fn render(mail: &Mail, project_name: &str, secret: &str) -> Rendered {
    let t = template(mail.kind);
    let link = redirect(mail, &mail.project, secret);
    let user = if mail.to_name.is_empty() {
        mail.to.split('@').next().unwrap_or("")
    } else {
        mail.to_name.as_str()
    };
    let owner = if mail.inviter.is_empty() {
        project_name
    } else {
        mail.inviter.as_str()
    };
    let code = matches!(mail.kind, MailKind::EmailOtp | MailKind::MfaChallenge);
    let otp = if code { secret } else { "" };
    let values = [
        ("project", project_name),
        ("user", user),
        ("team", mail.team_name.as_str()),
        ("owner", owner),
        ("otp", otp),
        ("phrase", mail.phrase.as_str()),
        ("redirect", link.as_str()),
    ];
    let fill = |s: &str, html: bool| substitute(s, &values, html);
    let mut text = vec![fill(t.hello, false), String::new(), fill(t.body, false)];
    let mut html = vec![
        format!("<p>{}</p>", fill(t.hello, true)),
        format!("<p>{}</p>", fill(t.body, true)),
    ];
    if code {
        text.push(String::new());
        text.push(otp.to_string());
        html.push(format!(
            "<p style=\"font-size:24px;font-weight:bold;letter-spacing:4px\">{}</p>",
            escape(otp)
        ));
    }
    if let Some(button) = t.button {
        text.push(String::new());
        text.push(format!("{}: {link}", fill(button, false)));
        html.push(format!(
            "<p><a href=\"{}\">{}</a></p>",
            escape(&link),
            fill(button, true)
        ));
    }
    if !mail.phrase.is_empty() {
        let line = "Security phrase for this email is {{b}}{{phrase}}{{/b}}. You can trust this email if this phrase matches the phrase shown during sign in.";
        text.push(String::new());
        text.push(fill(line, false));
        html.push(format!("<p>{}</p>", fill(line, true)));
    }
    text.extend([
        String::new(),
        fill(t.footer, false),
        String::new(),
        fill(t.thanks, false),
        fill(t.signature, false),
    ]);
    html.push(format!("<p>{}</p>", fill(t.footer, true)));
    html.push(format!(
        "<p>{}<br>{}</p>",
        fill(t.thanks, true),
        fill(t.signature, true)
    ));
    Rendered {
        subject: fill(t.subject, false),
        text: text.join("\n") + "\n",
        html: format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><div style=\"display:none\">{}</div>{}</body></html>",
            fill(t.subject, true),
            fill(t.preview, true),
            html.join("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts_are_what_a_browser_would_visit() {
        let host = |u: &str| url_host(u);
        assert_eq!(
            host("http://localhost:3000/x").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host("https://App.Example.com/a?b#c").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            host("HTTPS://example.com./").as_deref(),
            Some("example.com")
        );
        assert_eq!(host("https://u:p@evil.com/").as_deref(), Some("evil.com"));
        assert_eq!(
            host("https://localhost@evil.com/").as_deref(),
            Some("evil.com")
        );
        // A browser reads a backslash as `/`: the host is evil.com, not localhost.
        assert_eq!(
            host("https://evil.com\\@localhost/").as_deref(),
            Some("evil.com")
        );
        assert_eq!(host("https://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host("http://127.1/").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("javascript:alert(1)"), None);
        assert_eq!(host("ftp://example.com/"), None);
        assert_eq!(host("https://exa mple.com/"), None);
        assert_eq!(host("http://localhost/a\nInjected: text"), None);
        let (_, again) = parse_http_url("http://localhost/r?x=1#f").unwrap();
        assert_eq!(again, "http://localhost/r?x=1#f");
    }

    #[test]
    fn query_params_are_added_before_the_fragment_and_encoded() {
        assert_eq!(
            with_query("http://a/b", &[("userId", "u"), ("secret", "s&x")]),
            "http://a/b?userId=u&secret=s%26x"
        );
        assert_eq!(
            with_query("http://a/b?x=1#f", &[("k", "v")]),
            "http://a/b?x=1&k=v#f"
        );
        assert_eq!(with_query("http://a/b?", &[("k", "v")]), "http://a/b?k=v");
    }

    #[test]
    fn messages_carry_the_link_code_and_phrase_and_escape_names() {
        let mut m = new_mail(
            MailKind::Recovery,
            "http://localhost/r".into(),
            String::new(),
        );
        m.project = "p1".into();
        m.user_id = "u1".into();
        m.to = "a@b.co".into();
        m.to_name = "<Ann>".into();
        let r = render(&m, "Shop", "s3cret");
        assert_eq!(r.subject, "Password Reset for Shop");
        assert!(r
            .text
            .contains("http://localhost/r?userId=u1&secret=s3cret&expire="));
        assert!(r.text.contains("Hello <Ann>,"));
        assert!(r.html.contains("Hello &lt;Ann&gt;,"));
        let mut m = new_mail(MailKind::EmailOtp, String::new(), "Brave Owl".into());
        m.to = "a@b.co".into();
        let r = render(&m, "Shop", "012345");
        assert!(r.text.contains("\n012345\n"));
        assert!(r.text.contains("Hello a,"));
        assert!(r
            .text
            .contains("Security phrase for this email is Brave Owl."));
        assert!(r.html.contains("<strong>Brave Owl</strong>"));
        // A name that looks like a placeholder is a name.
        let mut m = new_mail(
            MailKind::Invitation,
            "http://localhost/j".into(),
            String::new(),
        );
        m.to = "a@b.co".into();
        m.to_name = "{{redirect}} {{b}}".into();
        m.inviter = "<b>Boss</b>".into();
        m.team_name = "Crew".into();
        let r = render(&m, "Shop", "s");
        assert!(r.text.contains("Hello {{redirect}} {{b}},"), "{}", r.text);
        assert!(
            r.html.contains("<strong>&lt;b&gt;Boss&lt;/b&gt;</strong>"),
            "{}",
            r.html
        );
        assert_eq!(r.subject, "Invitation to Crew Team at Shop");
    }
}
