//! `l2-xconnect`: VPP's `set interface l2 xconnect`. Every frame received
//! on a cross-connected port leaves, byte for byte, by the port it is
//! connected to; nothing of Ethernet or IP is looked at. Each direction is
//! its own setting ([`Tables::xconnect`](crate::tables::Tables::xconnect)).

use crate::buffer::Packet;
use crate::graph::{Context, DropReason, Next, Node, NodeId};

#[derive(Debug, Default)]
pub struct L2Xconnect;

impl Node for L2Xconnect {
    const ID: NodeId = NodeId::L2Xconnect;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let meta = pkt.meta_mut();
        match cx.tables.xconnect(meta.rx_port) {
            // A peer that is gone or not created yet is `PortId::INVALID`,
            // which interface-output counts as port-down.
            Some(tx) => {
                meta.tx_port = tx;
                Next::Node(NodeId::InterfaceOutput)
            }
            // The burst was steered here by the same snapshot, so only a
            // graph driven by hand gets here.
            None => Next::Drop(DropReason::XconnectRemoved),
        }
    }
}
