//! The SQLSTATE codes the proxy itself answers with (PostgreSQL's Appendix A names).

/// A plugin refused the statement (`syntax_error_or_access_rule_violation`).
pub const BLOCKED: &str = "42000";
/// A statement inside a failed transaction block (`in_failed_sql_transaction`).
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// The server's answer to an Execute of an unknown portal (`invalid_cursor_name`): a fence's error.
pub const INVALID_CURSOR_NAME: &str = "34000";
/// A malformed or unexpected message (`protocol_violation`).
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// A statement or rewrite the proxy cannot carry out (`internal_error`).
pub const INTERNAL_ERROR: &str = "XX000";
/// A protocol feature the proxy does not offer (`feature_not_supported`).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// A node a plugin named is not configured, or cannot be reached (`sqlclient_unable_to_establish_sqlconnection`).
pub const CANNOT_CONNECT: &str = "08001";
/// The upstream connection broke mid-session (`connection_failure`).
pub const CONNECTION_FAILURE: &str = "08006";
/// No user name in the startup packet, or an unknown one (`invalid_authorization_specification`).
pub const INVALID_AUTHORIZATION: &str = "28000";
/// Wrong password (`invalid_password`).
pub const INVALID_PASSWORD: &str = "28P01";
/// The proxy is shutting down (`admin_shutdown`).
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// A pool or connection limit was reached (`too_many_connections`).
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// A client attempted to change an attribute the operator bound to its user (`insufficient_privilege`).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// A client prepared a statement name it already uses (`duplicate_prepared_statement`).
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";

/// A session idle in a transaction for too long (`idle_in_transaction_session_timeout`).
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";

/// No plugin worker was free in time (`insufficient_resources`).
pub const INSUFFICIENT_RESOURCES: &str = "53000";

/// PostgreSQL's own message for a statement in a failed transaction block.
pub const IN_FAILED_SQL_TRANSACTION_MESSAGE: &str =
    "current transaction is aborted, commands ignored until end of transaction block";
