//! `arp-input`: proxy ARP for the pod gateway. Every request from a pod is
//! answered with the gateway MAC, whatever address it asks for, as Calico
//! does with 169.254.1.1; probes and gratuitous ARPs get no answer so a
//! pod's duplicate-address checks succeed.

use std::net::Ipv4Addr;

use caracal_wire::arp::{ArpPacket, Operation};
use caracal_wire::EthernetFrame;

use super::L2_LEN;
use crate::buffer::Packet;
use crate::graph::{Context, DropReason, Next, Node, NodeId};

#[derive(Debug, Default)]
pub struct ArpInput;

impl Node for ArpInput {
    const ID: NodeId = NodeId::ArpInput;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let gw_mac = cx.tables.gateway.mac;
        let data = pkt.data_mut();
        let Ok(mut arp) = ArpPacket::new_checked(&mut data[L2_LEN..]) else {
            return Next::Drop(DropReason::ArpMalformed);
        };
        if !arp.is_ethernet_ipv4() {
            return Next::Drop(DropReason::ArpMalformed);
        }
        if arp.operation() != Operation::REQUEST {
            return Next::Drop(DropReason::ArpNotRequest);
        }
        let (sha, spa, tpa) = (
            arp.source_hardware_addr(),
            arp.source_protocol_addr(),
            arp.target_protocol_addr(),
        );
        if spa == Ipv4Addr::UNSPECIFIED || spa == tpa {
            return Next::Drop(DropReason::ArpProbe);
        }
        arp.set_operation(Operation::REPLY);
        arp.set_source_hardware_addr(gw_mac);
        arp.set_source_protocol_addr(tpa);
        arp.set_target_hardware_addr(sha);
        arp.set_target_protocol_addr(spa);
        let mut eth = EthernetFrame::new_unchecked(&mut data[..]);
        eth.set_dst_addr(sha);
        eth.set_src_addr(gw_mac);
        let rx = pkt.meta().rx_port;
        pkt.meta_mut().tx_port = rx;
        Next::Node(NodeId::InterfaceOutput)
    }
}
