//! The outbox's sender. Emails are queued in Raft state by the apply that makes their secret
//! (`AuthOp::EmailToken`, `AuthOp::Invite`); while this node leads, it sends those that are
//! due, over SMTP, and commits what became of each: sent (`MailSent`, it leaves the queue) or
//! failed (`MailRetry`, due again later, with a growing pause; dropped with a warning after
//! `MAIL_ATTEMPTS` tries or once its secret has expired).
//!
//! Delivery is at least once: a leader that sends an email and dies before its `MailSent`
//! commits leaves it queued, and the next leader sends it again. An email is never lost once
//! the request that asked for it was answered.
//!
//! The message is rendered here (`api::mail::render`), its secret derived again from the
//! project's secret: the queue holds none.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use model::auth::{self, Mail};
use model::command::{Actor, AuthOp, Envelope, Op};
use model::reader::Consistency;
use raft::RaftNode;
use std::sync::Weak;
use std::time::Duration;

/// How often an idle sender looks at the queue.
const IDLE: Duration = Duration::from_millis(250);
/// Emails looked at per pass.
const BATCH: usize = 16;
/// The pause before the first retry; doubled on each, up to an hour.
const FIRST_RETRY_MS: i64 = 10_000;
const MAX_RETRY_MS: i64 = 3_600_000;
/// One SMTP command, at most (lettre's own timeout), and one whole email.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// After a failure the sender pauses (doubling up to a minute) before it tries the queue
/// again, so a server that is down is not asked about every email every 250 ms.
const FIRST_PAUSE: Duration = Duration::from_secs(2);
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// `--smtp-tls`: how the connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or network).
    None,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl SmtpTls {
    pub fn parse(s: &str) -> Option<SmtpTls> {
        match s {
            "none" => Some(SmtpTls::None),
            "starttls" => Some(SmtpTls::StartTls),
            "tls" => Some(SmtpTls::Tls),
            _ => None,
        }
    }

    /// The port each mode uses unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// The SMTP server this node sends through (`--smtp-*`).
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: SmtpTls,
    /// `From:`, as `Name <address>` or a bare address.
    pub sender: String,
}

/// Everything but the password.
impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("sender", &self.sender)
            .finish()
    }
}

impl Smtp {
    /// Checks the settings once, at start: a sender that is no address is refused then,
    /// not at the first email.
    pub fn check(&self) -> anyhow::Result<()> {
        self.sender
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("--smtp-sender {:?}: {e}", self.sender))?;
        self.transport()?;
        Ok(())
    }

    fn transport(&self) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
        let tls = match self.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(TlsParameters::new(self.host.clone())?),
            SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(self.host.clone())?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some(user) = &self.username {
            let password = self.password.clone().unwrap_or_default();
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        Ok(b.build())
    }
}

/// Runs until the node is gone. Without SMTP settings this node sends nothing (another node,
/// once leader, will): every node of a cluster should be given the same settings.
pub async fn run(node: Weak<RaftNode>, smtp: Option<Smtp>) {
    let transport = match smtp.as_ref().map(|s| s.transport()) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "SMTP settings unusable; this node sends no email");
            None
        }
        None => None,
    };
    let sender = smtp.as_ref().and_then(|s| s.sender.parse::<Mailbox>().ok());
    let mut warned = false;
    let mut busy = false;
    // Failed sends in a row (each pass stops at the first).
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            let pause = FIRST_PAUSE.saturating_mul(1 << (failures - 1).min(10));
            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
        } else if !busy {
            tokio::time::sleep(IDLE).await;
        }
        busy = false;
        let Some(node) = node.upgrade() else { return };
        if !node.is_leader() {
            failures = 0;
            continue;
        }
        let Ok(view) = node.view(Consistency::Local).await else {
            continue;
        };
        let queue = match view.outbox(BATCH) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "reading the email outbox");
                continue;
            }
        };
        let now = chrono::Utc::now().timestamp_millis();
        let due: Vec<Mail> = queue.into_iter().filter(|m| m.due <= now).collect();
        if due.is_empty() {
            failures = 0;
            continue;
        }
        let (Some(transport), Some(sender)) = (&transport, &sender) else {
            if !warned {
                tracing::warn!(
                    queued = due.len(),
                    "emails are queued but this node (the leader) has no SMTP settings"
                );
                warned = true;
            }
            continue;
        };
        for mail in due {
            // A leader that stepped down stops sending at once (the new one sends).
            if !node.is_leader() {
                break;
            }
            let sent =
                tokio::time::timeout(SEND_TIMEOUT, deliver(&view, transport, sender, &mail, now))
                    .await
                    .unwrap_or_else(|_| Err(Failure::Retry("timed out".into())));
            let failed = matches!(sent, Err(Failure::Retry(_)));
            let op = match sent {
                Ok(()) => {
                    tracing::info!(project = %mail.project, kind = ?mail.kind, id = %mail.id, "email sent");
                    AuthOp::MailSent {
                        due: mail.due,
                        id: mail.id.clone(),
                    }
                }
                Err(Failure::Drop(why)) => {
                    tracing::warn!(project = %mail.project, kind = ?mail.kind, id = %mail.id, %why, "email dropped");
                    AuthOp::MailSent {
                        due: mail.due,
                        id: mail.id.clone(),
                    }
                }
                Err(Failure::Retry(why)) if mail.attempts + 1 >= auth::MAIL_ATTEMPTS => {
                    tracing::warn!(project = %mail.project, kind = ?mail.kind, id = %mail.id, %why, attempts = mail.attempts + 1, "email dropped after its last try");
                    AuthOp::MailSent {
                        due: mail.due,
                        id: mail.id.clone(),
                    }
                }
                Err(Failure::Retry(why)) => {
                    let pause = FIRST_RETRY_MS
                        .saturating_mul(1 << mail.attempts.min(20))
                        .min(MAX_RETRY_MS);
                    tracing::warn!(project = %mail.project, kind = ?mail.kind, id = %mail.id, %why, retry_in_ms = pause, "email not sent");
                    AuthOp::MailRetry {
                        due: mail.due,
                        id: mail.id.clone(),
                        next: now.saturating_add(pause),
                    }
                }
            };
            let env = Envelope::new(
                mail.project.clone(),
                api::new_request_id(),
                Actor::Operator,
                Op::Auth(op),
            );
            match node.write(env).await {
                Ok(_) => busy = true,
                Err(e) => {
                    // Not committed: the email stays queued and is looked at again (sent
                    // again, if it was sent: at least once).
                    tracing::debug!(error = %e, "outbox update not committed; retrying later");
                    busy = false;
                    break;
                }
            }
            if failed {
                // The server is likely down for the rest of the batch too.
                failures = failures.saturating_add(1);
                break;
            }
            failures = 0;
        }
    }
}

enum Failure {
    /// Not worth another try (its secret expired, its project is gone).
    Drop(String),
    /// The SMTP server refused or could not be reached.
    Retry(String),
}

async fn deliver(
    view: &storage_engine::View,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    sender: &Mailbox,
    mail: &Mail,
    now: i64,
) -> Result<(), Failure> {
    use model::reader::StateReader;
    if mail.expire != 0 && mail.expire <= now {
        return Err(Failure::Drop("its secret has expired".into()));
    }
    let project = match view.project(&mail.project) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Failure::Drop("its project is gone".into())),
        Err(e) => return Err(Failure::Retry(e.to_string())),
    };
    let secret = match view.jwt_secret(&mail.project) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Failure::Drop("its project has no secret".into())),
        Err(e) => return Err(Failure::Retry(e.to_string())),
    };
    let secret = auth::mail_secret(&secret, mail.kind, &mail.secret_of);
    let r = api::mail::render(mail, &project.name, &secret);
    let to = match mail.to.parse::<lettre::Address>() {
        Ok(a) => Mailbox::new(Some(mail.to_name.clone()).filter(|n| !n.is_empty()), a),
        Err(e) => return Err(Failure::Drop(format!("recipient address: {e}"))),
    };
    let message = Message::builder()
        .from(sender.clone())
        .to(to)
        .subject(r.subject)
        .multipart(MultiPart::alternative_plain_html(r.text, r.html))
        .map_err(|e| Failure::Drop(format!("building the message: {e}")))?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        // A 5xx answer (no such mailbox, refused) will not change by asking again.
        Err(e) if e.is_permanent() => Err(Failure::Drop(format!("refused: {e}"))),
        Err(e) => Err(Failure::Retry(e.to_string())),
    }
}
