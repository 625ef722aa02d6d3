//! What became of a request that produced no reply: the typed outcome that decides whether it
//! may be sent again. A request is executed at most once, so only a request that was
//! *certainly not delivered* is ever re-sent.

use crate::MeshError;

/// Why a request was certainly not executed. Crosses node-to-node hops (HTTP: the
/// `x-mesh-refusal` header of a 503), so the sender knows it may route the request again.
///
/// ```
/// use mesh_core::Refusal;
///
/// assert_eq!(Refusal::parse("draining"), Some(Refusal::Draining));
/// assert!(Refusal::Draining.is_transient(), "the others take its shards in a moment");
/// assert!(!Refusal::MailboxFull.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The receiver does not own the actor under its current view.
    NotOwner,
    /// The owner has not learned its cluster, or the others have not acknowledged it yet.
    NotReady,
    /// The owner cannot confirm its ownership: no quorum renewed its lease.
    NoLease,
    /// The owner is draining before it leaves the cluster.
    Draining,
    /// The actor's mailbox is full (a cast): routing again would not help.
    MailboxFull,
    /// No connection to the owner could be made: nothing was sent.
    Unreachable,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 6] = [
        Refusal::NotOwner,
        Refusal::NotReady,
        Refusal::NoLease,
        Refusal::Draining,
        Refusal::MailboxFull,
        Refusal::Unreachable,
    ];

    /// The refusal's name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotOwner => "not_owner",
            Refusal::NotReady => "not_ready",
            Refusal::NoLease => "no_lease",
            Refusal::Draining => "draining",
            Refusal::MailboxFull => "mailbox_full",
            Refusal::Unreachable => "unreachable",
        }
    }

    /// Parses a name written by [`Refusal::as_str`].
    pub fn parse(name: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether routing the request again may succeed (membership or leases may settle).
    pub fn is_transient(self) -> bool {
        self != Refusal::MailboxFull
    }
}

/// A request that produced no reply, by what it means for sending it again.
///
/// ```
/// use mesh_core::{HopError, Refusal};
///
/// // A transport that could not connect: nothing was sent, so mesh may send it again.
/// let hop = HopError::refused(Refusal::Unreachable, "node-2 is not reachable");
/// assert!(matches!(hop, HopError::NotDelivered(Refusal::Unreachable, _)));
/// // What the caller sees if the deadline leaves no room for another try.
/// assert_eq!(hop.into_error().code().as_str(), "owner_unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopError {
    /// Certainly not executed: it may be routed again, to the same or another owner.
    NotDelivered(Refusal, MeshError),
    /// The owner handled it and answered with this error: final.
    Failed(MeshError),
    /// It may have been executed (the connection broke after it was sent, the owner was
    /// declared dead while it was in flight, the reply never came): final, and reported as
    /// `timeout`, the one error code that does not promise the request did not run.
    MaybeDelivered(String),
}

impl HopError {
    /// A request refused before it reached any activation.
    pub fn refused(refusal: Refusal, message: impl Into<String>) -> HopError {
        HopError::NotDelivered(refusal, MeshError::OwnerUnavailable(message.into()))
    }

    /// The error the caller sees.
    pub fn into_error(self) -> MeshError {
        match self {
            HopError::NotDelivered(_, error) | HopError::Failed(error) => error,
            HopError::MaybeDelivered(message) => MeshError::Timeout(message),
        }
    }
}

impl From<MeshError> for HopError {
    fn from(error: MeshError) -> HopError {
        HopError::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn refusals_round_trip_through_their_names() {
        for refusal in Refusal::ALL {
            assert_eq!(Refusal::parse(refusal.as_str()), Some(refusal));
        }
        assert_eq!(Refusal::parse("nope"), None);
        assert!(!Refusal::MailboxFull.is_transient());
        assert!(Refusal::NotOwner.is_transient());
    }

    #[test]
    fn only_a_maybe_delivered_request_reports_timeout() {
        let refused = HopError::refused(Refusal::NoLease, "no quorum");
        assert_eq!(refused.into_error().code(), ErrorCode::OwnerUnavailable);
        let maybe = HopError::MaybeDelivered("connection reset".into());
        assert_eq!(maybe.into_error().code(), ErrorCode::Timeout);
        let failed = HopError::from(MeshError::unknown_module("X"));
        assert_eq!(failed.into_error().code(), ErrorCode::UnknownModule);
    }
}
