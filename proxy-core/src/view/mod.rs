//! [`NodeView`]: the node-local projection of the topology for one IP family,
//! with the decision for every service port already taken.

pub mod categorize;
mod node_view;
mod port_map;
mod port_view;

pub use categorize::{Categorized, TopologyMode, categorize};
pub use node_view::NodeView;
pub use port_view::{ServicePortView, Target};
