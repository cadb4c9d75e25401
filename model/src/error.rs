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
            other => other,
        }
    }
}

/// A deterministic, user-facing failure: an Appwrite error type plus a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::GeneralArgumentInvalid, message)
    }
    pub fn query(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::GeneralQueryInvalid, message)
    }
    pub fn structure(message: impl Into<String>) -> Self {
        Error::new(
            ErrorCode::DocumentInvalidStructure,
            format!("Invalid document structure: {}", message.into()),
        )
    }
}

pub type Result<T> = std::result::Result<T, Error>;
