//! Which node a new room goes to: the least loaded node that is alive and
//! not draining. The choice is made inside Redis (the placement script in
//! registry.rs), so that it sees the rooms just placed by other nodes;
//! this module turns node entries into the script's candidates.

use crate::node::NodeInfo;

/// A node the script may place a room on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// The node's CPU load in steps (see [`load_step`]): the script prefers
    /// the lowest step, then the fewest rooms placed on the node.
    pub step: u32,
}

/// CPU load in tenths. Nodes within one step count as equally loaded, so
/// that rooms spread by count between idle nodes instead of following
/// noise in the load figures; a node a whole step busier is avoided.
pub fn load_step(cpu: f64) -> u32 {
    if cpu.is_finite() {
        (cpu.clamp(0.0, 1.0) * 10.0).floor() as u32
    } else {
        10
    }
}

/// The nodes that may take a new room: alive (the caller passes only
/// entries that have not expired) and not draining.
pub fn candidates(nodes: &[NodeInfo]) -> Vec<Candidate> {
    nodes
        .iter()
        .filter(|n| !n.draining)
        .map(|n| Candidate {
            id: n.id.clone(),
            step: load_step(n.load.cpu),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeLoad;

    fn node(id: &str, cpu: f64, draining: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            url: format!("http://{id}"),
            load: NodeLoad {
                cpu,
                rooms: 0,
                participants: 0,
            },
            draining,
            refreshed_ms: 0,
        }
    }

    #[test]
    fn load_steps_are_tenths_and_nonsense_is_busiest() {
        assert_eq!(load_step(0.0), 0);
        assert_eq!(load_step(0.09), 0);
        assert_eq!(load_step(0.1), 1);
        assert_eq!(load_step(0.95), 9);
        assert_eq!(load_step(1.0), 10);
        assert_eq!(load_step(7.0), 10);
        assert_eq!(load_step(-1.0), 0);
        assert_eq!(load_step(f64::NAN), 10);
        assert_eq!(load_step(f64::INFINITY), 10);
    }

    #[test]
    fn draining_nodes_are_no_candidates() {
        let nodes = [node("a", 0.5, true), node("b", 0.35, false)];
        assert_eq!(
            candidates(&nodes),
            vec![Candidate {
                id: "b".into(),
                step: 3
            }]
        );
    }
}
