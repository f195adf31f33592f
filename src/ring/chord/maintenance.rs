//! The periodic half of the router: stabilize, notify's answer,
//! fix_fingers, check_predecessor, and forgetting nodes that do not answer.

use super::{
    ChordReply, ChordRequest, MAX_SUCCESSORS, NodeRef, Position, Router, Task, Vnode, in_half_open,
    in_open,
};

impl<N: NodeRef> Router<N> {
    /// The periodic work: stabilize, check_predecessor and fix_fingers for
    /// every vnode.
    pub fn tick(&mut self) -> Vec<Task<N>> {
        let mut tasks = Vec::new();
        let per_tick = self.config.fingers_per_tick;
        for v in &mut self.vnodes {
            // A lone vnode that was notified has a ring of two.
            if v.succs.is_empty()
                && let Some(p) = &v.pred
            {
                v.succs.push(p.clone());
                self.dirty = true;
            }
            if let Some(succ) = v.succs.first() {
                tasks.push(Task::Stabilize {
                    vnode: v.pos,
                    succ: succ.clone(),
                });
            }
            if let Some(pred) = &v.pred
                && pred.node != self.me
            {
                tasks.push(Task::CheckPredecessor { pred: pred.clone() });
            }
            let Some(first) = v.succs.first().cloned() else {
                continue;
            };
            let mut started = 0;
            for _ in 0..64 {
                if started == per_tick {
                    break;
                }
                let i = v.next_finger;
                v.next_finger = (i + 1) % 64;
                let id = v.pos.wrapping_add(1u64 << i);
                if in_half_open(id, v.pos, first.pos) {
                    // The first successor is the finger: nothing to ask.
                    if let Ok(at) = v.fingers.binary_search_by_key(&i, |(k, _)| *k) {
                        v.fingers.remove(at);
                        self.dirty = true;
                    }
                } else if let Some(s) = v.succs.iter().find(|s| in_half_open(id, v.pos, s.pos)) {
                    // Within the successor list: the finger is known here.
                    let s = s.clone();
                    match v.fingers.binary_search_by_key(&i, |(k, _)| *k) {
                        Ok(at) if v.fingers[at].1 == s => {}
                        Ok(at) => {
                            v.fingers[at].1 = s;
                            self.dirty = true;
                        }
                        Err(at) => {
                            v.fingers.insert(at, (i, s));
                            self.dirty = true;
                        }
                    }
                } else {
                    tasks.push(Task::FixFinger {
                        vnode: v.pos,
                        index: i,
                        id,
                    });
                    started += 1;
                }
            }
        }
        tasks
    }

    /// Stabilize's answer from the successor of `vnode`. Returns the notify
    /// to send.
    pub fn on_neighbors(
        &mut self,
        vnode: Position,
        reply: ChordReply<N>,
    ) -> Option<(N, ChordRequest<N>)> {
        let me = self.me.clone();
        let limit = self.config.successors;
        let v = self.vnode_mut(vnode)?;
        let succ = v.succs.first()?.clone();
        match reply {
            ChordReply::Neighbors { pred, succs } => {
                let mut next = Vec::with_capacity(limit);
                if let Some(p) = pred
                    && p.pos != vnode
                    && in_open(p.pos, vnode, succ.pos)
                {
                    next.push(p);
                }
                next.push(succ);
                for s in succs.into_iter().take(MAX_SUCCESSORS) {
                    if next.len() >= limit || s.pos == vnode {
                        break;
                    }
                    if !next.iter().any(|x| x.pos == s.pos) {
                        next.push(s);
                    }
                }
                next.truncate(limit);
                if next != v.succs {
                    v.succs = next;
                    self.dirty = true;
                }
                let v = self.vnode_mut(vnode)?;
                let to = v.succs.first()?.clone();
                let candidate = Vnode {
                    pos: vnode,
                    node: me,
                };
                Some((
                    to.node,
                    ChordRequest::Notify {
                        pos: to.pos,
                        candidate,
                    },
                ))
            }
            _ => {
                // The successor's vnode is gone: drop it from the list.
                v.succs.remove(0);
                self.dirty = true;
                None
            }
        }
    }

    /// Records finger `index` of `vnode`, found by a lookup.
    pub fn set_finger(&mut self, vnode: Position, index: u8, owner: Vnode<N>) {
        let Some(v) = self.vnode_mut(vnode) else {
            return;
        };
        let is_first = v.succs.first() == Some(&owner);
        match v.fingers.binary_search_by_key(&index, |(k, _)| *k) {
            Ok(at) if is_first => {
                v.fingers.remove(at);
            }
            Ok(at) if v.fingers[at].1 == owner => return,
            Ok(at) => v.fingers[at].1 = owner,
            Err(_) if is_first => return,
            Err(at) => v.fingers.insert(at, (index, owner)),
        }
        self.dirty = true;
    }

    /// `node` did not answer (or left): forget it everywhere, so routing
    /// goes around it, and refill empty successor lists from what is left.
    pub fn on_unreachable(&mut self, node: &N) {
        if *node == self.me {
            return;
        }
        self.rebuild();
        let mut changed = false;
        for i in 0..self.vnodes.len() {
            let v = &mut self.vnodes[i];
            let before = (v.succs.len(), v.fingers.len(), v.pred.is_some());
            v.succs.retain(|s| s.node != *node);
            v.fingers.retain(|(_, f)| f.node != *node);
            if v.pred.as_ref().is_some_and(|p| p.node == *node) {
                v.pred = None;
            }
            changed |= before != (v.succs.len(), v.fingers.len(), v.pred.is_some());
            if v.succs.is_empty() {
                let pos = v.pos;
                let next = self
                    .closest_following(pos, std::slice::from_ref(node))
                    .filter(|n| n.pos != pos);
                self.vnodes[i].succs.extend(next);
            }
        }
        if changed {
            self.dirty = true;
        }
    }
}
