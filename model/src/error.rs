//! Appwrite's error `type` strings, each with its HTTP status.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident = ($ty:literal, $status:literal),)*) => {
        /// An Appwrite error type. The string is what clients see in `type`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $ty,)* }
            }
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
        }
    };
}

error_codes! {
    GeneralUnknown = ("general_unknown", 500),
    GeneralServerError = ("general_server_error", 500),
    GeneralArgumentInvalid = ("general_argument_invalid", 400),
    GeneralQueryInvalid = ("general_query_invalid", 400),
    GeneralCursorNotFound = ("general_cursor_not_found", 400),
    GeneralRouteNotFound = ("general_route_not_found", 404),
    GeneralUnauthorizedScope = ("general_unauthorized_scope", 401),
    GeneralAccessForbidden = ("general_access_forbidden", 401),
    GeneralNotImplemented = ("general_not_implemented", 405),
    GeneralBadRequest = ("general_bad_request", 400),
    GeneralUnavailable = ("general_server_error", 503),
    GeneralRateLimitExceeded = ("general_rate_limit_exceeded", 429),
    UserUnauthorized = ("user_unauthorized", 401),
    ProjectNotFound = ("project_not_found", 404),
    ProjectAlreadyExists = ("project_already_exists", 409),
    ProjectIdMissing = ("project_id_missing", 403),
    ProjectReserved = ("project_reserved_project", 400),
    ProjectKeyExpired = ("project_key_expired", 401),
    KeyNotFound = ("key_not_found", 404),
    KeyAlreadyExists = ("key_already_exists", 409),
    DatabaseNotFound = ("database_not_found", 404),
    DatabaseAlreadyExists = ("database_already_exists", 409),
    DatabaseTimeout = ("database_timeout", 408),
    CollectionNotFound = ("collection_not_found", 404),
    CollectionAlreadyExists = ("collection_already_exists", 409),
    TableNotFound = ("table_not_found", 404),
    TableAlreadyExists = ("table_already_exists", 409),
    DocumentNotFound = ("document_not_found", 404),
    DocumentInvalidStructure = ("document_invalid_structure", 400),
    DocumentMissingData = ("document_missing_data", 400),
    DocumentMissingPayload = ("document_missing_payload", 400),
    DocumentAlreadyExists = ("document_already_exists", 409),
    DocumentUniqueViolation = ("document_unique_constraint_violation", 409),
    RowNotFound = ("row_not_found", 404),
    RowInvalidStructure = ("row_invalid_structure", 400),
    RowMissingData = ("row_missing_data", 400),
    RowMissingPayload = ("row_missing_payload", 400),
    RowAlreadyExists = ("row_already_exists", 409),
    RowUniqueViolation = ("row_unique_constraint_violation", 409),
    AttributeNotFound = ("attribute_not_found", 404),
    AttributeUnknown = ("attribute_unknown", 400),
    AttributeDefaultUnsupported = ("attribute_default_unsupported", 400),
    AttributeAlreadyExists = ("attribute_already_exists", 409),
    AttributeValueInvalid = ("attribute_value_invalid", 400),
    AttributeTypeInvalid = ("attribute_type_invalid", 400),
    AttributeLimitExceeded = ("attribute_limit_exceeded", 400),
    ColumnNotFound = ("column_not_found", 404),
    ColumnUnknown = ("column_unknown", 400),
    ColumnDefaultUnsupported = ("column_default_unsupported", 400),
    ColumnAlreadyExists = ("column_already_exists", 409),
    ColumnValueInvalid = ("column_value_invalid", 400),
    ColumnTypeInvalid = ("column_type_invalid", 400),
    ColumnLimitExceeded = ("column_limit_exceeded", 400),
    IndexNotFound = ("index_not_found", 404),
    IndexAlreadyExists = ("index_already_exists", 409),
    IndexInvalid = ("index_invalid", 400),
    IndexDependency = ("index_dependency", 409),
    ColumnIndexNotFound = ("column_index_not_found", 404),
    ColumnIndexAlreadyExists = ("column_index_already_exists", 409),
    ColumnIndexInvalid = ("column_index_invalid", 400),
    ColumnIndexDependency = ("column_index_dependency", 409),
    TransactionNotFound = ("transaction_not_found", 404),
    TransactionAlreadyExists = ("transaction_already_exists", 409),
    TransactionInvalid = ("transaction_invalid", 400),
    TransactionFailed = ("transaction_failed", 400),
    TransactionExpired = ("transaction_expired", 410),
    TransactionConflict = ("transaction_conflict", 409),
    TransactionLimitExceeded = ("transaction_limit_exceeded", 400),
    TransactionNotReady = ("transaction_not_ready", 400),
    // Appended, never inserted: outcomes remembered in the state carry the variant's index.
    GeneralUnknownOrigin = ("general_unknown_origin", 403),
    UserNotFound = ("user_not_found", 404),
    UserAlreadyExists = ("user_already_exists", 409),
    UserEmailAlreadyExists = ("user_email_already_exists", 409),
    UserPhoneAlreadyExists = ("user_phone_already_exists", 409),
    UserBlocked = ("user_blocked", 403),
    UserInvalidCredentials = ("user_invalid_credentials", 401),
    UserInvalidToken = ("user_invalid_token", 401),
    UserJwtInvalid = ("user_jwt_invalid", 401),
    UserSessionNotFound = ("user_session_not_found", 404),
    UserSessionAlreadyExists = ("user_session_already_exists", 401),
    UserCountExceeded = ("user_count_exceeded", 400),
    UserPasswordMismatch = ("user_password_mismatch", 400),
    UserApiKeyAndSessionSet = ("user_api_key_and_session_set", 403),
    UserJwtAndCookieSet = ("user_jwt_and_cookie_set", 403),
    UserJwtCreationDenied = ("user_jwt_creation_denied", 403),
    UserAuthMethodUnsupported = ("user_auth_method_unsupported", 501),
    UserMoreFactorsRequired = ("user_more_factors_required", 401),
    UserTargetNotFound = ("user_target_not_found", 404),
    PasswordRecentlyUsed = ("password_recently_used", 400),
    PasswordPersonalData = ("password_personal_data", 400),
    UserTargetAlreadyExists = ("user_target_already_exists", 409),
    TeamNotFound = ("team_not_found", 404),
    TokenNotFound = ("token_not_found", 404),
    StorageFileAlreadyExists = ("storage_file_already_exists", 409),
    StorageFileNotFound = ("storage_file_not_found", 404),
    StorageFileEmpty = ("storage_file_empty", 400),
    StorageFileTypeUnsupported = ("storage_file_type_unsupported", 400),
    StorageImageResolutionExceeded = ("storage_image_resolution_exceeded", 400),
    StorageInvalidFileSize = ("storage_invalid_file_size", 400),
    StorageInvalidFile = ("storage_invalid_file", 403),
    StorageBucketAlreadyExists = ("storage_bucket_already_exists", 409),
    StorageBucketNotFound = ("storage_bucket_not_found", 404),
    StorageInvalidContentRange = ("storage_invalid_content_range", 400),
    StorageInvalidRange = ("storage_invalid_range", 416),
    StorageInvalidAppwriteId = ("storage_invalid_appwrite_id", 400),
    StorageFileNotPublic = ("storage_file_not_public", 403),
    StorageBucketTransformationsDisabled = ("storage_bucket_transformations_disabled", 403),
    TeamAlreadyExists = ("team_already_exists", 409),
    TeamMembershipMismatch = ("team_membership_mismatch", 404),
    MembershipNotFound = ("membership_not_found", 404),
    MembershipAlreadyConfirmed = ("membership_already_confirmed", 409),
    GeneralSmtpDisabled = ("general_smtp_disabled", 503),
    UserEmailNotFound = ("user_email_not_found", 400),
    TeamInviteNotFound = ("team_invite_not_found", 404),
    TeamInvalidSecret = ("team_invalid_secret", 401),
    TeamInviteMismatch = ("team_invite_mismatch", 401),
    UserEmailAlreadyVerified = ("user_email_already_verified", 409),
    GeneralPhoneDisabled = ("general_phone_disabled", 503),
    UserEmailNotVerified = ("user_email_not_verified", 400),
    UserChallengeRequired = ("user_challenge_required", 401),
    UserAuthenticatorNotFound = ("user_authenticator_not_found", 404),
    UserAuthenticatorAlreadyVerified = ("user_authenticator_already_verified", 409),
    UserRecoveryCodesAlreadyExists = ("user_recovery_codes_already_exists", 409),
    UserRecoveryCodesNotFound = ("user_recovery_codes_not_found", 404),
    HealthQueueSizeExceeded = ("health_queue_size_exceeded", 503),
    HealthCertificateExpired = ("health_certificate_expired", 404),
    HealthInvalidHost = ("health_invalid_host", 404),
    IndexLimitExceeded = ("index_limit_exceeded", 400),
    ColumnIndexLimitExceeded = ("column_index_limit_exceeded", 400),
    AttributeInvalidResize = ("attribute_invalid_resize", 400),
    ColumnInvalidResize = ("column_invalid_resize", 400),
    RelationshipValueInvalid = ("relationship_value_invalid", 400),
    DocumentDeleteRestricted = ("document_delete_restricted", 403),
    RowDeleteRestricted = ("row_delete_restricted", 403),
    AttributeNotAvailable = ("attribute_not_available", 400),
    ColumnNotAvailable = ("column_not_available", 400),
}

impl ErrorCode {
    /// The TablesDB spelling of a Databases error (documents → rows, attributes → columns).
    pub fn for_tables(self) -> ErrorCode {
        use ErrorCode::*;
        match self {
            CollectionNotFound => TableNotFound,
            CollectionAlreadyExists => TableAlreadyExists,
            DocumentNotFound => RowNotFound,
            DocumentInvalidStructure => RowInvalidStructure,
            DocumentMissingData => RowMissingData,
            DocumentMissingPayload => RowMissingPayload,
            DocumentAlreadyExists => RowAlreadyExists,
            DocumentUniqueViolation => RowUniqueViolation,
            AttributeNotFound => ColumnNotFound,
            AttributeUnknown => ColumnUnknown,
            AttributeDefaultUnsupported => ColumnDefaultUnsupported,
            AttributeAlreadyExists => ColumnAlreadyExists,
            AttributeValueInvalid => ColumnValueInvalid,
            AttributeTypeInvalid => ColumnTypeInvalid,
            AttributeLimitExceeded => ColumnLimitExceeded,
            IndexNotFound => ColumnIndexNotFound,
            IndexAlreadyExists => ColumnIndexAlreadyExists,
            IndexInvalid => ColumnIndexInvalid,
            IndexDependency => ColumnIndexDependency,
            IndexLimitExceeded => ColumnIndexLimitExceeded,
            AttributeInvalidResize => ColumnInvalidResize,
            DocumentDeleteRestricted => RowDeleteRestricted,
            AttributeNotAvailable => ColumnNotAvailable,
            other => other,
        }
    }
}

/// A message for the client: a template in the Databases API's words, with `{}` where the
/// values the client named (ids, keys, values) go, and those values kept apart. The TablesDB
/// wording renames the template's words only, so an id such as `my_document` reaches the
/// client as it was sent. Made with `msg!`, or from plain text that names nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    template: String,
    args: Vec<String>,
}

/// `msg!("Document '{}' not found.", id)`: a `Message` whose `{}` are filled by the arguments
/// (anything `Display`), which are never translated.
#[macro_export]
macro_rules! msg {
    ($template:literal $(, $arg:expr)* $(,)?) => {
        $crate::error::Message::new($template, vec![$(($arg).to_string()),*])
    };
}

impl Message {
    pub fn new(template: impl Into<String>, args: Vec<String>) -> Message {
        Message {
            template: template.into(),
            args,
        }
    }

    /// The text in the Databases API's words.
    pub fn text(&self) -> String {
        fill(&self.template, &self.args)
    }

    /// The same message in the TablesDB API's words (documents → rows, attributes → columns,
    /// collections → tables); the arguments as they were.
    pub fn tables_text(&self) -> String {
        fill(&tables_words(&self.template), &self.args)
    }

    /// This message after `prefix` (plain text of ours).
    pub fn prefixed(self, prefix: &str) -> Message {
        Message {
            template: format!("{prefix}{}", self.template),
            args: self.args,
        }
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message::new(text, Vec::new())
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        Message::new(text, Vec::new())
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// The template with each `{}` replaced by the next argument, in one pass (an argument that
/// itself holds `{}` stays as it is). Text without arguments is left whole.
fn fill(template: &str, args: &[String]) -> String {
    if args.is_empty() {
        return template.to_string();
    }
    let mut out =
        String::with_capacity(template.len() + args.iter().map(String::len).sum::<usize>());
    let mut args = args.iter();
    let mut parts = template.split("{}").peekable();
    while let Some(part) = parts.next() {
        out.push_str(part);
        if parts.peek().is_some() {
            out.push_str(args.next().map(String::as_str).unwrap_or("{}"));
        }
    }
    out
}

fn tables_words(template: &str) -> String {
    template
        .replace("Document", "Row")
        .replace("document", "row")
        .replace("Attribute", "Column")
        .replace("attribute", "column")
        .replace("Collection", "Table")
        .replace("collection", "table")
}

/// A deterministic, user-facing failure: an Appwrite error type plus a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: Message,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<Message>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<Message>) -> Self {
        Error::new(ErrorCode::GeneralArgumentInvalid, message)
    }
    pub fn query(message: impl Into<Message>) -> Self {
        Error::new(ErrorCode::GeneralQueryInvalid, message)
    }
    pub fn structure(message: impl Into<Message>) -> Self {
        Error::new(
            ErrorCode::DocumentInvalidStructure,
            message.into().prefixed("Invalid document structure: "),
        )
    }
    /// `self` as the cause of a failure of type `code`: its message after `prefix`.
    pub fn caused(self, code: ErrorCode, prefix: &str) -> Self {
        Error::new(code, self.message.prefixed(prefix))
    }
    /// The same failure as the TablesDB API reports it: its type and its words.
    pub fn for_tables(self) -> Self {
        Error {
            code: self.code.for_tables(),
            message: Message::new(tables_words(&self.message.template), self.message.args),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_wording_renames_words_not_what_the_client_named() {
        let e = Error::new(
            ErrorCode::DocumentNotFound,
            msg!(
                "Document with the requested ID '{}' could not be found.",
                "my_document"
            ),
        );
        assert_eq!(
            e.message.text(),
            "Document with the requested ID 'my_document' could not be found."
        );
        let t = e.for_tables();
        assert_eq!(t.code, ErrorCode::RowNotFound);
        assert_eq!(
            t.message.text(),
            "Row with the requested ID 'my_document' could not be found."
        );
        // Unquoted and nested too.
        let e = Error::structure(msg!("Unknown attribute: {}", "attribute_x")).for_tables();
        assert_eq!(
            e.message.text(),
            "Invalid row structure: Unknown column: attribute_x"
        );
        let e = e.caused(
            ErrorCode::TransactionFailed,
            "The transaction has errored: ",
        );
        assert_eq!(
            e.message.text(),
            "The transaction has errored: Invalid row structure: Unknown column: attribute_x"
        );
    }

    #[test]
    fn filling_is_one_pass() {
        assert_eq!(fill("a {} b {}", &["{}".into(), "x".into()]), "a {} b x");
        assert_eq!(fill("no args {}", &[]), "no args {}");
        assert_eq!(fill("{} {}", &["only".into()]), "only {}");
    }
}
