//! How many runtime threads a node's `chorus serve` starts.
//!
//! A node alone on its machine takes one thread per core (tokio's
//! default). Several nodes the cluster file places on one host (the same
//! listen IP, as a local cluster on loopback has them) share its cores:
//! each takes its share, at least one. With more runnable threads than
//! cores, tasks are stolen between workers and woken across threads, and
//! every wake-up is a futex call; three nodes on two cores ran reads 12%
//! faster with one thread each than with two (docs/benchmarks.md). An
//! explicit `[[nodes]] worker_threads` always wins.

use std::net::SocketAddr;

use super::Config;

impl Config {
    /// Runtime threads for `node` on a machine of `cores` cores: its
    /// `worker_threads`, else its share of the cores among the nodes on
    /// its host, else `None` (one per core). A node whose listen address
    /// is unspecified (0.0.0.0) or not an IP is taken to be alone.
    pub fn runtime_threads(&self, node: &str, cores: usize) -> Option<usize> {
        let me = self.nodes.iter().find(|n| n.id == node)?;
        if me.worker_threads.is_some() {
            return me.worker_threads;
        }
        let host = |listen: &str| {
            listen
                .parse::<SocketAddr>()
                .ok()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
        };
        let mine = host(&me.listen)?;
        let sharing = self
            .nodes
            .iter()
            .filter(|n| host(&n.listen) == Some(mine))
            .count();
        (sharing > 1).then(|| (cores / sharing).max(1))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn cluster(listens: &[&str], threads_of_first: Option<usize>) -> Config {
        let mut config = Config::dev(listens.len(), 7001, std::path::Path::new("/tmp/x"));
        for (node, listen) in config.nodes.iter_mut().zip(listens) {
            node.listen = listen.to_string();
        }
        config.nodes[0].worker_threads = threads_of_first;
        config
    }

    #[test]
    fn nodes_on_one_host_share_its_cores_and_a_node_alone_takes_them_all() {
        let local = cluster(
            &["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
            None,
        );
        assert_eq!(local.runtime_threads("n1", 2), Some(1));
        assert_eq!(local.runtime_threads("n2", 8), Some(2));
        assert_eq!(local.runtime_threads("n3", 12), Some(4));
        let spread = cluster(&["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"], None);
        assert_eq!(spread.runtime_threads("n1", 8), None);
        let two_hosts = cluster(&["10.0.0.1:7001", "10.0.0.1:7002", "10.0.0.2:7001"], None);
        assert_eq!(two_hosts.runtime_threads("n1", 8), Some(4));
        assert_eq!(two_hosts.runtime_threads("n3", 8), None);
        // Unspecified or named hosts say nothing of the machine.
        let unknown = cluster(&["0.0.0.0:7001", "0.0.0.0:7002", "node3:7001"], None);
        assert_eq!(unknown.runtime_threads("n1", 8), None);
        assert_eq!(unknown.runtime_threads("n3", 8), None);
        assert_eq!(local.runtime_threads("n9", 8), None);
    }

    #[test]
    fn an_explicit_worker_threads_wins() {
        let local = cluster(
            &["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
            Some(3),
        );
        assert_eq!(local.runtime_threads("n1", 2), Some(3));
    }
}
