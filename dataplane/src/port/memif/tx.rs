//! Transmit: copy packets from our buffers into the peer's ring.
//!
//! As a server we fill the empty buffers the client handed out on a
//! server-to-client ring, from our `tail` up to the client's `head`: each
//! descriptor's buffer is validated against the client's regions (with
//! the room the client announced in its length) before we write to it,
//! and a packet longer than one buffer continues in the next
//! ([`DESC_FLAG_NEXT`]). As a client we write into our own buffers behind
//! a client-to-server ring, up to one ring ahead of the server's `tail`,
//! and publish `head`.
//!
//! The ring's eventfd is signalled once per burst, after the index is
//! published, and only if the peer has not masked interrupts
//! ([`RING_FLAG_MASK_INT`]). In IP mode our frames' Ethernet header is
//! stripped and non-IP frames (ARP replies) are not sent.

use caracal_wire::{EtherType, EthernetFrame};

use super::abi::{Descriptor, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};
use super::connection::{Connection, Direction, PeerFault, TxRing};
use super::{Mode, Role};
use crate::buffer::{BufferCache, Frame};

/// What one burst did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    pub packets: u64,
    /// Bytes put on the ring (IP mode: without the Ethernet header).
    pub bytes: u64,
    /// Packets not sent: ring full, not IP in IP mode, or a fault.
    pub errors: u64,
}

/// Sends every packet of `pkts` on queue `queue`'s ring (emptying it);
/// every buffer goes back to `cache`.
pub fn transmit(
    conn: &Connection,
    queue: usize,
    cache: &mut BufferCache,
    pkts: &mut Frame,
    stats: &mut TxStats,
) -> Result<(), PeerFault> {
    if conn.tx.is_empty() {
        stats.errors += pkts.len() as u64;
        for b in pkts.drain() {
            cache.free(b);
        }
        return Ok(());
    }
    let index = queue % conn.tx.len();
    let tx = &conn.tx[index];
    let _guard = tx.lock();
    let ring = &tx.ring;
    let ours = tx.position.load(std::sync::atomic::Ordering::Relaxed);
    // The peer's index bounds how far we may produce.
    let (peer, room) = match conn.role {
        // S2C: the client's head is one past the last empty buffer.
        Role::Server => {
            let head = ring.head();
            (head, head.wrapping_sub(ours))
        }
        // C2S: the server's tail is where it stopped consuming.
        Role::Client => {
            let tail = ring.tail();
            (tail, ring.size().wrapping_sub(ours.wrapping_sub(tail)))
        }
    };
    if room > ring.size() {
        stats.errors += pkts.len() as u64;
        for b in pkts.drain() {
            cache.free(b);
        }
        return Err(PeerFault::Indices {
            dir: Direction::Tx,
            ring: index,
            ours,
            peer,
            distance: room,
            size: ring.size(),
        });
    }
    let end = ours.wrapping_add(room);
    let mut next = ours;
    let mut fault = None;
    for mut buffer in pkts.drain() {
        if fault.is_some() {
            stats.errors += 1;
            cache.free(buffer);
            continue;
        }
        // Bytes put on the ring, `None` when the packet was not sent.
        let sent = {
            let packet = cache.pool().packet(&mut buffer);
            match frame_bytes(conn.mode, packet.data()) {
                None => Ok(None),
                Some(bytes) => put(conn, tx, index, &mut next, end, bytes)
                    .map(|fitted| fitted.then_some(bytes.len())),
            }
        };
        match sent {
            Ok(Some(len)) => {
                stats.packets += 1;
                stats.bytes += len as u64;
            }
            Ok(None) => stats.errors += 1,
            Err(f) => {
                stats.errors += 1;
                fault = Some(f);
            }
        }
        cache.free(buffer);
    }
    if next != ours {
        tx.position
            .store(next, std::sync::atomic::Ordering::Relaxed);
        match conn.role {
            Role::Server => ring.set_tail(next),
            Role::Client => ring.set_head(next),
        }
        if ring.flags() & RING_FLAG_MASK_INT == 0 {
            tx.interrupt.ring();
        }
    }
    fault.map_or(Ok(()), Err)
}

/// The bytes to put on the ring: the whole frame, or in IP mode its IP
/// packet (`None` for anything else).
#[inline]
fn frame_bytes(mode: Mode, frame: &[u8]) -> Option<&[u8]> {
    match mode {
        Mode::Ethernet => Some(frame),
        Mode::Ip => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            match eth.ethertype() {
                EtherType::IPV4 | EtherType::IPV6 => {
                    Some(&frame[caracal_wire::ethernet::HEADER_LEN..])
                }
                _ => None,
            }
        }
    }
}

/// Writes one packet into descriptors from `*next`, advancing it past
/// them. `Ok(false)`: not enough room left before `end` (nothing is
/// published for this packet).
#[inline]
fn put(
    conn: &Connection,
    tx: &TxRing,
    index: usize,
    next: &mut u16,
    end: u16,
    bytes: &[u8],
) -> Result<bool, PeerFault> {
    let ring = &tx.ring;
    let mut slot = *next;
    let mut done = 0usize;
    loop {
        if slot == end {
            return Ok(false);
        }
        let rest = bytes.len() - done;
        let chunk = match (conn.role, tx.own, conn.own_memory()) {
            (Role::Server, _, _) => {
                // The client's empty buffer: its length is its room.
                let desc = ring.desc(slot);
                if desc.length == 0 {
                    return Err(PeerFault::EmptyBuffer { ring: index, slot });
                }
                let chunk = rest.min(desc.length as usize);
                let (mem, at) = desc
                    .validate(&conn.memories, chunk as u32)
                    .map_err(|source| PeerFault::Descriptor {
                        dir: Direction::Tx,
                        ring: index,
                        slot,
                        source,
                    })?;
                mem.copy_in(at, &bytes[done..done + chunk]);
                let more = done + chunk < bytes.len();
                ring.set_desc_length(slot, chunk as u32, if more { DESC_FLAG_NEXT } else { 0 });
                chunk
            }
            (Role::Client, Some(own), Some(mem)) => {
                let chunk = rest.min(own.size as usize);
                let at = own.offset(ring, slot);
                mem.copy_in(at, &bytes[done..done + chunk]);
                let more = done + chunk < bytes.len();
                ring.set_desc(
                    slot,
                    Descriptor {
                        flags: if more { DESC_FLAG_NEXT } else { 0 },
                        region: 0,
                        length: chunk as u32,
                        offset: at as u32,
                        metadata: 0,
                    },
                );
                chunk
            }
            // A client connection always has its own buffers.
            (Role::Client, _, _) => return Ok(false),
        };
        done += chunk;
        slot = slot.wrapping_add(1);
        if done == bytes.len() {
            *next = slot;
            return Ok(true);
        }
    }
}
