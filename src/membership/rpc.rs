//! Membership's peer messages, each tied to its reply, and their handlers.
//!
//! | request | reply | what for |
//! |---|---|---|
//! | [`Beats`] | [`Beats`] | liveness: push-pull of heartbeat tables |
//! | [`Gossip`] | [`Members`] | the members document, merged both ways |
//! | [`Join`] | [`Members`] | a new node asks to be admitted |
//! | [`Chord`] | [`ChordReply`] | ring maintenance, a step of a lookup |

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Cluster;
use super::liveness::Beat;
use crate::peer::{Rpc, Service, Services};
use crate::ring::{ChordReply, ChordRequest, Members};

/// Liveness gossip: the sender's heartbeat table; the receiver keeps the
/// newer of each entry and answers with its own table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beats(pub Vec<Beat>);

impl Rpc for Beats {
    const SERVICE: Service = Service::new("membership.beats", 1);
    type Reply = Beats;
}

/// Gossip: merge this members document and answer with the merged one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip(pub Members);

impl Rpc for Gossip {
    const SERVICE: Service = Service::new("membership.gossip", 1);
    type Reply = Members;
}

/// A node asks to join the ring: the receiver admits it (choosing its
/// tokens) and answers with the members document. Sent to the seed's
/// address, so signed for any receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub id: String,
    pub addr: String,
    pub zone: Option<String>,
    pub weight: u32,
}

impl Rpc for Join {
    const SERVICE: Service = Service::new("membership.join", 1).to_any();
    type Reply = Members;
}

/// One Chord RPC: ring maintenance or a step of a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chord(pub ChordRequest<String>);

impl Rpc for Chord {
    const SERVICE: Service = Service::new("membership.chord", 1);
    type Reply = ChordReply<String>;
}

impl Cluster {
    /// Registers membership's handlers in `services`.
    pub fn serve(self: &Arc<Self>, services: &Services) {
        let cluster = Arc::clone(self);
        services.register_now(move |Beats(beats): Beats| cluster.heard(&beats).map(Beats));
        let cluster = Arc::clone(self);
        services.register_now(move |Gossip(members): Gossip| {
            cluster.apply(&members).map(|_| cluster.roster().members())
        });
        let cluster = Arc::clone(self);
        services.register_now(move |join: Join| {
            let admitted = cluster.admit(&join.id, &join.addr, join.zone.as_deref(), join.weight);
            if admitted.is_ok() {
                tracing::info!(node = %join.id, addr = %join.addr, "admitted to the ring");
            }
            admitted
        });
        let cluster = Arc::clone(self);
        services.register_now(move |Chord(request): Chord| Ok(cluster.routes().answer(request)));
    }
}
