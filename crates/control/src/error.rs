//! Errors of the control core.

use tailwarden_store::StoreError;

/// Why a control operation failed. Converted to client-visible messages at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Storage failed or refused the change.
    #[error(transparent)]
    Store(StoreError),
    /// A request named a node that does not exist or is not this machine's.
    #[error("node {node_key} is not registered for this machine")]
    UnknownNode {
        /// The node key from the request.
        node_key: String,
    },
    /// The client is older than the minimum supported capability version.
    #[error("client capability version {version} is too old; tailwarden needs {min} or newer (Tailscale v1.80+)")]
    ClientTooOld {
        /// The client's version.
        version: u16,
        /// The minimum.
        min: u16,
    },
    /// An argument was invalid.
    #[error("{what}")]
    Invalid {
        /// Description of the problem.
        what: String,
    },
    /// Reading or writing a key file failed.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A policy was rejected; the previous one stays in force.
    #[error("policy rejected: {0}")]
    Policy(tailwarden_policy::PolicyError),
    /// The policy is managed in a file (`policy.mode: file`) and cannot be changed through the API.
    #[error("policy.mode is \"file\": edit {path} (reloaded on SIGHUP and on change) instead")]
    PolicyInFile {
        /// The policy file.
        path: String,
    },
    /// A pending interactive registration was not found.
    #[error("no pending registration with id {id:?} (it may have expired)")]
    UnknownRegistration {
        /// The id.
        id: String,
    },
}

// Not `#[from]`: that would also make the policy error the `source`, and reports that print the chain would show
// the reason twice.
impl From<tailwarden_policy::PolicyError> for ControlError {
    fn from(e: tailwarden_policy::PolicyError) -> Self {
        ControlError::Policy(e)
    }
}
