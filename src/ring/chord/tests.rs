use super::*;
use crate::sim::network::Network;

fn config() -> ChordConfig {
    ChordConfig {
        successors: 4,
        fingers_per_tick: 4,
    }
}

/// `nodes` nodes of `tokens` tokens, joined one wave after another through
/// random members, then maintained until converged (or `max` rounds).
fn cold_start(nodes: usize, tokens: usize, seed: u64, max: usize) -> (Network, usize) {
    let mut net = Network::new(config(), seed);
    net.add(tokens);
    for _ in 1..nodes {
        let live = net.live();
        let id = net.add(tokens);
        net.join(id, live[id as usize % live.len()]);
    }
    let mut rounds = 0;
    while !net.converged() && rounds < max {
        net.round();
        rounds += 1;
    }
    (net, rounds)
}

fn all_lookups_right(net: &mut Network, count: u64) -> (usize, u32) {
    let truth = net.truth();
    let live = net.live();
    let mut wrong = 0;
    let mut max_hops = 0;
    for i in 0..count {
        let id = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let from = live[i as usize % live.len()];
        let found = net.lookup(from, id);
        max_hops = max_hops.max(found.hops);
        if found.owner.as_ref() != Some(Network::owner(&truth, id)) {
            wrong += 1;
        }
    }
    (wrong, max_hops)
}

#[test]
fn joins_converge_and_every_lookup_finds_the_owner() {
    let (mut net, rounds) = cold_start(60, 4, 7, 200);
    assert!(net.converged(), "not converged after {rounds} rounds");
    let (wrong, max_hops) = all_lookups_right(&mut net, 2000);
    assert_eq!(wrong, 0);
    // 240 vnodes: log2 is under 8; a lookup needs no more.
    assert!(max_hops <= 8, "a lookup took {max_hops} hops");
}

#[test]
fn a_seeded_router_is_exact_and_routes_in_few_hops() {
    let mut net = Network::new(config(), 3);
    for _ in 0..200 {
        net.add(8);
    }
    net.seed_all();
    assert!(net.converged());
    let (wrong, max_hops) = all_lookups_right(&mut net, 2000);
    assert_eq!(wrong, 0);
    assert!(max_hops <= 11, "{max_hops} hops");
}

#[test]
fn crashed_nodes_are_routed_around_and_the_ring_heals() {
    let mut net = Network::new(config(), 11);
    for _ in 0..50 {
        net.add(4);
    }
    net.seed_all();
    // Three nodes crash at once, fewer than the successor list can absorb.
    for victim in [3, 17, 30] {
        net.crash(victim);
    }
    // Before any repair, lookups already go around the dead nodes.
    let (wrong, _) = all_lookups_right(&mut net, 1000);
    assert_eq!(wrong, 0, "lookups failed before stabilization");
    for _ in 0..40 {
        if net.converged() {
            break;
        }
        net.round();
    }
    assert!(net.converged(), "the ring did not heal");
}

#[test]
fn a_graceful_leave_is_known_to_its_neighbours_at_once() {
    let mut net = Network::new(config(), 5);
    for _ in 0..20 {
        net.add(2);
    }
    net.seed_all();
    net.leave(4);
    let (wrong, _) = all_lookups_right(&mut net, 500);
    assert_eq!(wrong, 0);
    for _ in 0..20 {
        net.round();
    }
    assert!(net.converged());
}

#[test]
fn answers_to_unknown_vnodes_and_long_avoid_lists_are_bounded() {
    let mut r: Router<u32> = Router::new(1, &[10, 20], config());
    assert_eq!(
        r.answer(ChordRequest::Neighbors { pos: 11 }),
        ChordReply::NoSuchVnode
    );
    assert_eq!(
        r.answer(ChordRequest::Notify {
            pos: 15,
            candidate: Vnode { pos: 1, node: 2 }
        }),
        ChordReply::NoSuchVnode
    );
    // An avoid list of every node still answers, and quickly.
    let avoid: Vec<u32> = (0..100_000).collect();
    let reply = r.answer(ChordRequest::FindSuccessor { id: 15, avoid });
    assert!(matches!(reply, ChordReply::Found { .. }), "{reply:?}");
    // A notify from a node claiming to be this one does not break routing.
    r.answer(ChordRequest::Notify {
        pos: 10,
        candidate: Vnode { pos: 5, node: 1 },
    });
    assert!(matches!(r.route(7, &[]), ChordReply::Found { .. }));
}

#[test]
fn interval_helpers_wrap() {
    assert!(in_open(5, 1, 9));
    assert!(!in_open(9, 1, 9));
    assert!(in_open(0, u64::MAX - 1, 3));
    assert!(in_half_open(3, u64::MAX - 1, 3));
    assert!(in_half_open(7, 7, 7), "(a, a] is the whole ring");
    assert!(!in_open(7, 7, 7));
}
