//! What the backend wants in the kernel: the fixed skeleton of the table and
//! the objects of each service port, as [`crate::ir`] values.

mod nodeport_ips;
mod port;
mod skeleton;

pub use nodeport_ips::{NodePortMatch, node_port_networks};
pub use port::{PortObjects, render_port};
pub use skeleton::{Skeleton, names as skeleton_names};
