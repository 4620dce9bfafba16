//! Receive: copy packets out of the peer's ring into our buffers.
//!
//! As a server we consume a client-to-server ring from our position up to
//! the `head` the client published, then publish our `tail`; descriptors
//! point anywhere in the client's regions, so each one is validated
//! against the mapped regions before a byte is copied. As a client we
//! consume a server-to-client ring up to the server's `tail`; the buffers
//! are ours (slot `i` → our buffer `i`), so only the length the server
//! wrote is checked, and the consumed slots are handed back as empty
//! buffers by advancing `head`.
//!
//! Every packet is copied into one of our buffers: a chain of descriptors
//! ([`super::abi::DESC_FLAG_NEXT`], how memif carries a packet longer
//! than one ring buffer) is gathered into one buffer of the pool when it
//! fits its data room, and otherwise dropped whole and counted
//! (`too_long`), never truncated. A chain must end within what the peer
//! published (at most a ring), and every descriptor of it is validated
//! like a single one. A burst touches the ring's indices once and makes
//! no system call. In IP mode the peer's frames carry no Ethernet header, so
//! one is written in front (gateway MAC as destination, the peer's as
//! source), as the graph starts at `ethernet-input`.

use caracal_wire::{EtherType, EthernetAddress, EthernetFrame};

use super::abi::{Descriptor, Ring};
use super::connection::{Connection, Direction, OwnBuffers, PeerFault};
use super::{Mode, Role};
use crate::buffer::{BufferCache, Frame, Meta, Packet};
use crate::port::shm::SharedMemory;
use crate::port::PortId;

/// What one burst did, counted once per burst by the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxStats {
    pub packets: u64,
    /// Bytes taken off the ring (IP mode: without the header we add).
    pub bytes: u64,
    /// The buffer pool ran dry before the ring did.
    pub no_buffer: bool,
    /// Packets dropped: empty, or (IP mode) not IP.
    pub bad_length: u64,
    /// Packets dropped because they are longer than a buffer of the pool.
    pub too_long: u64,
}

/// Why a packet taken off the ring is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Empty, or not IP in IP mode.
    BadLength,
    /// Longer than our buffer's data room.
    TooLong,
}

/// Receives from queue `queue`'s ring into `out` until the ring or `out`
/// is empty/full. Packets received before a fault is found stay in `out`.
pub fn receive(
    conn: &Connection,
    queue: usize,
    port: PortId,
    cache: &mut BufferCache,
    out: &mut Frame,
    stats: &mut RxStats,
) -> Result<(), PeerFault> {
    let Some(rx) = conn.rx.get(queue) else {
        return Ok(());
    };
    let ring = &rx.ring;
    let start = rx.position.load(std::sync::atomic::Ordering::Relaxed);
    let published = match conn.role {
        Role::Server => ring.head(),
        Role::Client => ring.tail(),
    };
    let available = published.wrapping_sub(start);
    if available == 0 {
        return Ok(());
    }
    if available > ring.size() {
        return Err(PeerFault::Indices {
            dir: Direction::Rx,
            ring: queue,
            ours: start,
            peer: published,
            distance: available,
            size: ring.size(),
        });
    }
    let framing = Framing::of(conn);
    let end = match (conn.role, rx.own, conn.own_memory()) {
        (Role::Server, _, _) => take(
            ring,
            queue,
            start,
            published,
            framing,
            port,
            cache,
            out,
            stats,
            |_, d| {
                d.validate(&conn.memories, d.length)
                    .map_err(|source| (Some(source), 0))
            },
        )?,
        (Role::Client, Some(own), Some(mem)) => take(
            ring,
            queue,
            start,
            published,
            framing,
            port,
            cache,
            out,
            stats,
            |index, d| {
                if d.length > own.size {
                    return Err((None, own.size));
                }
                Ok((mem, own.offset(ring, index)))
            },
        )?,
        // A client connection always has its own buffers.
        (Role::Client, _, _) => return Ok(()),
    };
    if end == start {
        return Ok(());
    }
    rx.position.store(end, std::sync::atomic::Ordering::Relaxed);
    match (conn.role, rx.own) {
        (Role::Server, _) => ring.set_tail(end),
        (Role::Client, Some(own)) => refill(ring, own, start, end),
        (Role::Client, None) => {}
    }
    Ok(())
}

/// Client: hands the slots `start..end` (just consumed) back to the
/// server as empty buffers and publishes the new head, one ring ahead of
/// what we have consumed.
pub fn refill(ring: &Ring, own: OwnBuffers, start: u16, end: u16) {
    let mut i = start;
    while i != end {
        ring.set_desc(
            i,
            Descriptor {
                flags: 0,
                region: 0,
                length: own.size,
                offset: own.offset(ring, i) as u32,
                metadata: 0,
            },
        );
        i = i.wrapping_add(1);
    }
    ring.set_head(end.wrapping_add(ring.size()));
}

/// How the peer's frames map to ours.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// IP mode: the Ethernet header we write in front, minus its type.
    ip: Option<(EthernetAddress, EthernetAddress)>,
}

impl Framing {
    fn of(conn: &Connection) -> Self {
        Framing {
            ip: (conn.mode == Mode::Ip).then_some((conn.gateway_mac, conn.peer_mac)),
        }
    }

    /// Bytes we put in front of the peer's packet.
    fn prefix(self) -> usize {
        if self.ip.is_some() {
            caracal_wire::ethernet::HEADER_LEN
        } else {
            0
        }
    }
}

/// Where a validated descriptor's bytes are, or why it is refused: a
/// layout error, or (client) the buffer size it overran.
type Resolved<'m> = Result<(&'m SharedMemory, usize), (Option<super::abi::LayoutError>, u32)>;

/// Copies the packets in ring indices `start..end` into fresh buffers
/// appended to `out`; returns the index it stopped at (the start of the
/// first packet not taken).
#[allow(clippy::too_many_arguments)]
#[inline]
fn take<'m>(
    ring: &Ring,
    queue: usize,
    start: u16,
    end: u16,
    framing: Framing,
    port: PortId,
    cache: &mut BufferCache,
    out: &mut Frame,
    stats: &mut RxStats,
    resolve: impl Fn(u16, &Descriptor) -> Resolved<'m>,
) -> Result<u16, PeerFault> {
    let mut next = start;
    while next != end && !out.is_full() {
        let Some(mut buffer) = cache.alloc() else {
            stats.no_buffer = true;
            break;
        };
        let outcome = {
            let mut packet = cache.pool().packet(&mut buffer);
            *packet.meta_mut() = Meta::received(port, 0);
            copy_packet(ring, queue, &mut next, end, framing, &mut packet, &resolve)
        };
        match outcome {
            Ok(len) => {
                out.push(buffer);
                stats.packets += 1;
                stats.bytes += len as u64;
            }
            Err(NotDelivered::Refused(why)) => {
                cache.free(buffer);
                match why {
                    Refused::BadLength => stats.bad_length += 1,
                    Refused::TooLong => stats.too_long += 1,
                }
            }
            Err(NotDelivered::Fault(fault)) => {
                cache.free(buffer);
                return Err(fault);
            }
        }
    }
    Ok(next)
}

/// Why [`copy_packet`] delivered nothing.
#[derive(Debug)]
enum NotDelivered {
    /// The packet is dropped, its slots consumed all the same.
    Refused(Refused),
    /// The peer broke the protocol: the connection is closed.
    Fault(PeerFault),
}

impl From<PeerFault> for NotDelivered {
    fn from(f: PeerFault) -> Self {
        NotDelivered::Fault(f)
    }
}

/// Copies the descriptors of one packet, starting at `*next`, into
/// `packet` and advances `*next` past them; returns the bytes the peer
/// sent (without a header we add).
#[inline]
fn copy_packet<'m>(
    ring: &Ring,
    queue: usize,
    next: &mut u16,
    end: u16,
    framing: Framing,
    packet: &mut Packet<'_>,
    resolve: &impl Fn(u16, &Descriptor) -> Resolved<'m>,
) -> Result<usize, NotDelivered> {
    let prefix = framing.prefix();
    let room = packet.data_room() - prefix;
    let (area, off) = packet.area_mut();
    let data = &mut area[off + prefix..off + prefix + room];
    let mut len = 0usize;
    let mut fits = true;
    loop {
        // The chain's last descriptor must be published with the rest:
        // `end - start` is at most the ring size, so this also bounds the
        // chain's length.
        if *next == end {
            return Err(PeerFault::UnfinishedChain { ring: queue }.into());
        }
        let slot = *next;
        let desc = ring.desc(slot);
        let (mem, at) = resolve(slot, &desc).map_err(|(source, size)| match source {
            Some(source) => PeerFault::Descriptor {
                dir: Direction::Rx,
                ring: queue,
                slot,
                source,
            },
            None => PeerFault::Overrun {
                ring: queue,
                slot,
                length: desc.length,
                size,
            },
        })?;
        *next = slot.wrapping_add(1);
        let seg = desc.length as usize;
        if fits && seg <= room - len {
            mem.copy_out(at, &mut data[len..len + seg]);
            len += seg;
        } else {
            fits = false;
        }
        if !desc.has_next() {
            break;
        }
    }
    if !fits {
        return Err(NotDelivered::Refused(Refused::TooLong));
    }
    if len == 0 {
        return Err(NotDelivered::Refused(Refused::BadLength));
    }
    if let Some((gateway, peer)) = framing.ip {
        let ethertype = match data[0] >> 4 {
            4 => EtherType::IPV4,
            6 => EtherType::IPV6,
            _ => return Err(NotDelivered::Refused(Refused::BadLength)),
        };
        let mut eth = EthernetFrame::new_unchecked(&mut area[off..off + prefix]);
        eth.set_dst_addr(gateway);
        eth.set_src_addr(peer);
        eth.set_ethertype(ethertype);
    }
    packet.set_len(prefix + len);
    Ok(len)
}
