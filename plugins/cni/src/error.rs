//! CNI errors: the `{cniVersion, code, msg, details}` object a plugin prints on failure.

use serde_json::{json, Value};
use std::fmt;

/// Error codes defined by the CNI specification (1.1.0, "Error" section), plus plumb's own (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like CNI_COMMAND or CNI_CONTAINERID.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. failed to read network config bytes from stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content, e.g. failed to unmarshal network config or a result.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config: a field failed validation.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (lock or API deadline) stopped the request.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available; the runtime should not send ADDs.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin is available with limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// plumb: every address of a range is reserved.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// plumb: a requested static address is reserved by another attachment.
    pub const ADDRESS_TAKEN: u32 = 101;
    /// plumb: CHECK found the reservation missing or different from prevResult.
    pub const CHECK_MISMATCH: u32 = 102;
    /// plumb: a delegated plugin failed without printing a CNI error.
    pub const DELEGATE_FAILED: u32 = 103;
    /// plumb: the store holds data it cannot use (corrupt record, foreign file).
    pub const STORE_CORRUPT: u32 = 104;
    /// plumb: an interface the attachment needs already exists (a previous ADD was not deleted).
    pub const INTERFACE_EXISTS: u32 = 105;
    /// plumb: the node's tenant policy denies the config (ADD, CHECK), or the policy file cannot be
    /// read or parsed (every ADD and CHECK is denied until it is fixed); see docs/policy.md.
    pub const POLICY_DENIED: u32 = 106;
}

/// A CNI error: a spec code, a one-line message naming the field and the fix, and the cause chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The spec code (see [`code`]).
    pub code: u32,
    /// What went wrong, for a person.
    pub msg: String,
    /// The cause chain, outermost first, joined into the `details` field.
    pub details: Vec<String>,
}

impl CniError {
    /// An error with a code and a message and no further details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: Vec::new(),
        }
    }

    /// Invalid network configuration (code 7).
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Invalid or missing environment variable (code 4).
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    /// Content that could not be decoded (code 6).
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE_FAILURE, msg)
    }

    /// An I/O failure (code 5) with the OS error as its cause.
    pub fn io(what: impl Into<String>, err: &std::io::Error) -> Self {
        Self::new(code::IO_FAILURE, what).caused_by(err)
    }

    /// Appends a cause to the details chain.
    pub fn caused_by(mut self, cause: impl fmt::Display) -> Self {
        self.details.push(cause.to_string());
        self
    }

    /// The JSON object printed on stdout, tagged with the config's version.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.join(": "));
        }
        v
    }

    /// Parses an error object printed by another plugin; `None` if it is not one.
    pub fn from_json(v: &Value) -> Option<Self> {
        let code = v.get("code")?.as_u64()?;
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let details = match v.get("details").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => vec![d.to_string()],
            _ => Vec::new(),
        };
        Some(CniError {
            code: u32::try_from(code).ok()?,
            msg,
            details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        for d in &self.details {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Shorthand for results carrying a [`CniError`].
pub type CniResult<T> = std::result::Result<T, CniError>;
