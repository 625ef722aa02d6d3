//! Names of things in the mesh. Each is a non-empty string of bounded length; an empty or
//! longer one is a `bad_request`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::MeshError;

/// The longest `module`, `capability` and node id, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The longest actor `id`, in bytes.
pub const MAX_ID_LEN: usize = 4096;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        ///
        /// Cheap to clone (a shared string), never empty, at most
        #[doc = concat!("`", stringify!($max), "`")]
        /// bytes.
        ///
        /// ```
        #[doc = concat!("use mesh_core::", stringify!($name), ";")]
        ///
        #[doc = concat!("let name = ", stringify!($name), "::new(\"counter_1\").unwrap();")]
        /// assert_eq!(name.as_str(), "counter_1");
        #[doc = concat!("let empty = ", stringify!($name), "::new(\"\").unwrap_err();")]
        /// assert_eq!(empty.code().as_str(), "bad_request");
        /// ```
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The longest one, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Wraps `value`, rejecting an empty or too long string with
            /// [`MeshError::BadRequest`].
            pub fn new(value: impl AsRef<str>) -> Result<Self, MeshError> {
                let value = value.as_ref();
                if value.is_empty() {
                    return Err(MeshError::BadRequest(concat!("`", $what, "` must not be empty").into()));
                }
                if value.len() > $max {
                    return Err(MeshError::BadRequest(format!(
                        concat!("`", $what, "` must be at most {} bytes, got {}"),
                        $max,
                        value.len()
                    )));
                }
                Ok($name(Arc::from(value)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = MeshError;
            fn try_from(value: &str) -> Result<Self, MeshError> {
                $name::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = MeshError;
            fn try_from(value: String) -> Result<Self, MeshError> {
                $name::new(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The id of one actor within its module, e.g. `"counter_1"`. It alone picks the shard.
    ActorId,
    "id",
    MAX_ID_LEN
);
name_type!(
    /// The name an actor type is registered under on every node, e.g. `"Counter"`.
    Module,
    "module",
    MAX_NAME_LEN
);
name_type!(
    /// What a node declares it can host, e.g. `"counter"`; a request names the capability
    /// its actor needs and only nodes that registered it may own the actor.
    Capability,
    "capability",
    MAX_NAME_LEN
);
name_type!(
    /// The id of one node of the cluster, unique within it.
    NodeId,
    "node_id",
    MAX_NAME_LEN
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_names_are_bad_requests() {
        let err = ActorId::new("").unwrap_err();
        assert_eq!(err, MeshError::BadRequest("`id` must not be empty".into()));
        assert!(matches!(Module::new(""), Err(MeshError::BadRequest(_))));
        assert!(matches!(Capability::new(""), Err(MeshError::BadRequest(_))));
        assert!(matches!(NodeId::new(""), Err(MeshError::BadRequest(_))));
    }

    #[test]
    fn names_longer_than_their_bound_are_bad_requests() {
        assert!(Module::new("m".repeat(255)).is_ok());
        let err = Module::new("m".repeat(256)).unwrap_err();
        assert_eq!(
            err,
            MeshError::BadRequest("`module` must be at most 255 bytes, got 256".into())
        );
        assert!(Capability::new("c".repeat(256)).is_err());
        assert!(NodeId::new("n".repeat(256)).is_err());
        assert!(ActorId::new("i".repeat(4096)).is_ok());
        let err = ActorId::new("i".repeat(4097)).unwrap_err();
        assert!(err.to_string().contains("at most 4096 bytes"), "{err}");
        // The bound is in bytes: a 2-byte character counts twice.
        assert!(Module::new("é".repeat(128)).is_err());
    }

    #[test]
    fn names_serialize_as_plain_strings_and_reject_empty_ones() {
        let id = ActorId::new("counter_1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"counter_1\"");
        let back: ActorId = serde_json::from_str("\"counter_1\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<ActorId>("\"\"").is_err());
    }
}
