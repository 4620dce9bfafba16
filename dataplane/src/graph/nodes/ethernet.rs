//! `ethernet-input`: accepts frames for the gateway MAC (and broadcast /
//! multicast, for ARP and neighbour discovery) and dispatches by EtherType.

use caracal_wire::{EtherType, EthernetFrame};

use crate::buffer::Packet;
use crate::graph::{Context, DropReason, Next, Node, NodeId};

#[derive(Debug, Default)]
pub struct EthernetInput;

impl Node for EthernetInput {
    const ID: NodeId = NodeId::EthernetInput;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let Ok(eth) = EthernetFrame::new_checked(pkt.data()) else {
            return Next::Drop(DropReason::EthTruncated);
        };
        let dst = eth.dst_addr();
        if dst != cx.tables.gateway.mac && !dst.is_multicast() {
            return Next::Drop(DropReason::EthNotForUs);
        }
        match eth.ethertype() {
            EtherType::IPV4 => Next::Node(NodeId::Ip4Input),
            EtherType::IPV6 => Next::Node(NodeId::Ip6Input),
            EtherType::ARP => Next::Node(NodeId::ArpInput),
            _ => Next::Drop(DropReason::EthUnknownType),
        }
    }
}
