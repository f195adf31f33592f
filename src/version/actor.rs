//! Who wrote what: actors, dots and version vectors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity that mints dots: a node id plus the incarnation of one
/// life of the node. Every start is a new actor, so a node can never mint a
/// dot that an earlier life used, whatever its disk holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The node id from the cluster config.
    pub node: String,
    /// A random number drawn when this life of the node started.
    pub incarnation: u64,
}

impl Actor {
    pub fn new(node: impl Into<String>, incarnation: u64) -> Self {
        Actor {
            node: node.into(),
            incarnation,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:x}", self.node, self.incarnation)
    }
}

/// One write event: the actor that coordinated it and that actor's counter.
pub type Dot = crdts::Dot<Actor>;

/// A version vector: for each actor, the highest counter seen.
pub type VersionVector = crdts::VClock<Actor>;

/// Whether `vv` has seen `dot`.
pub(crate) fn covers(vv: &VersionVector, dot: &Dot) -> bool {
    vv.get(&dot.actor) >= dot.counter
}
