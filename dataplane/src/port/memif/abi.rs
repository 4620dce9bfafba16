//! The memif wire ABI, version 2.0: the control messages exchanged over
//! the Unix socket and the layout of rings and descriptors in shared
//! memory, as libmemif, VPP's memif plugin and DPDK's `net_memif` use them.
//!
//! Control messages are fixed 128-byte datagrams: a little-endian `u16`
//! type, then the fields of that type packed without padding. They are
//! encoded and decoded field by field at explicit byte offsets ([`Message`]);
//! nothing here casts bytes to a packed struct.
//!
//! Shared memory holds plain `#[repr(C)]` data ([`Descriptor`],
//! [`RingHeader`]) behind one unsafe marker trait, [`Plain`], with their
//! sizes and field offsets asserted at compile time. A [`Ring`] is a
//! validated view of one ring inside a mapping: it is only built when the
//! whole ring lies in bounds, and it reads head and tail atomically and
//! descriptors as volatile snapshots, which [`Descriptor::validate`] checks
//! against the mapped regions before any byte they point at is touched.
//!
//! Layout (x86-64 and aarch64, 64-byte cache lines):
//!
//! ```text
//! ring:       0 cookie u32 | 4 flags u16 | 6 head u16 | .. | 64 tail u16 | .. | 128 desc[2^n]
//! descriptor: 0 flags u16  | 2 region u16 | 4 length u32 | 8 offset u32 | 12 metadata u32
//! ```
//!
//! The client creates every region and ring. A ring's producer advances
//! one index and its consumer the other: on client-to-server (C2S) rings
//! the client fills descriptors and moves `head`, the server consumes and
//! moves `tail`; on server-to-client (S2C) rings the client hands out empty
//! buffers by moving `head` and the server fills them and moves `tail`.
//! Indices are free-running `u16`s; slot = index & (size - 1).
#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::port::shm::SharedMemory;

/// Protocol version 2.0 (major in the high byte).
pub const VERSION: u16 = 0x0200;
/// Magic number at the start of every ring of a v2 peer.
pub const COOKIE: u32 = 0x03E3_1F20;
/// Size of every control message, bytes.
pub const MSG_SIZE: usize = 128;
/// Bytes of the NUL-padded name fields (application and interface names).
pub const NAME_SIZE: usize = 32;
/// Bytes of the NUL-padded secret.
pub const SECRET_SIZE: usize = 24;
/// Bytes of the NUL-padded reason of a disconnect message.
pub const REASON_SIZE: usize = 96;
/// Largest ring a peer may ask for: 2^14 descriptors, as DPDK allows.
pub const MAX_LOG2_RING_SIZE: u8 = 14;
/// `RingHeader::flags`: the consumer polls, so the producer must not
/// signal the ring's eventfd.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// `Descriptor::flags`: the packet continues in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;
/// `AddRing::flags`: the ring carries client-to-server traffic (`S2M`, in
/// the older master/slave naming).
pub const ADD_RING_FLAG_C2S: u16 = 1;

pub use crate::port::shm::Plain;

/// One buffer descriptor of a ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Descriptor {
    /// [`DESC_FLAG_NEXT`] when the packet continues in the next slot.
    pub flags: u16,
    /// Index of the region the buffer lies in.
    pub region: u16,
    /// Bytes of packet (filled) or of room (an empty S2C buffer).
    pub length: u32,
    /// Offset of the buffer from the start of its region.
    pub offset: u32,
    /// Unused by Ethernet and IP modes.
    pub metadata: u32,
}

const _: () = {
    assert!(size_of::<Descriptor>() == 16);
    assert!(offset_of!(Descriptor, region) == 2);
    assert!(offset_of!(Descriptor, length) == 4);
    assert!(offset_of!(Descriptor, offset) == 8);
    assert!(offset_of!(Descriptor, metadata) == 12);
};

// SAFETY: #[repr(C)] integers with no padding (asserted above).
unsafe impl Plain for Descriptor {}

/// Size of one descriptor, bytes.
pub const DESC_SIZE: usize = size_of::<Descriptor>();

/// The header of a ring; the descriptors follow it.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct RingHeader {
    pub cookie: u32,
    pub flags: u16,
    /// Written by the producer of C2S rings, the consumer of S2C rings.
    pub head: u16,
    _cacheline0: [u8; 56],
    /// Written by the other side.
    pub tail: u16,
    _cacheline1: [u8; 62],
}

const _: () = {
    assert!(size_of::<RingHeader>() == RING_HEADER_SIZE);
    assert!(offset_of!(RingHeader, flags) == 4);
    assert!(offset_of!(RingHeader, head) == 6);
    assert!(offset_of!(RingHeader, tail) == 64);
};

// SAFETY: #[repr(C)] integers and byte arrays with no padding (asserted).
unsafe impl Plain for RingHeader {}

/// Bytes before the first descriptor of a ring.
pub const RING_HEADER_SIZE: usize = 128;

/// Bytes a ring of 2^`log2` descriptors occupies.
pub const fn ring_bytes(log2: u8) -> usize {
    RING_HEADER_SIZE + (DESC_SIZE << log2)
}

/// Why a ring or a descriptor is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("ring of 2^{0} descriptors is larger than 2^{MAX_LOG2_RING_SIZE}")]
    RingTooLarge(u8),
    #[error("ring at offset {offset} is not 4-byte aligned")]
    Misaligned { offset: usize },
    #[error("ring at offset {offset} ({bytes} bytes) overruns its {region} byte region")]
    RingOutOfRegion {
        offset: usize,
        bytes: usize,
        region: usize,
    },
    #[error("descriptor names region {region}, which does not exist")]
    NoSuchRegion { region: u16 },
    #[error("descriptor buffer {offset}+{length} overruns region {region} ({size} bytes)")]
    BufferOutOfRegion {
        region: u16,
        offset: u32,
        length: u32,
        size: usize,
    },
}

impl Descriptor {
    #[inline]
    pub fn has_next(&self) -> bool {
        self.flags & DESC_FLAG_NEXT != 0
    }

    /// Checks that `length` bytes at this descriptor's offset lie inside
    /// one of `regions` (indexed by region number) and returns that
    /// region and the byte offset.
    #[inline]
    pub fn validate<'r>(
        &self,
        regions: &'r [Arc<SharedMemory>],
        length: u32,
    ) -> Result<(&'r SharedMemory, usize), LayoutError> {
        let Some(region) = regions.get(usize::from(self.region)) else {
            return Err(LayoutError::NoSuchRegion {
                region: self.region,
            });
        };
        let offset = self.offset as usize;
        if !region.contains(offset, length as usize) {
            return Err(LayoutError::BufferOutOfRegion {
                region: self.region,
                offset: self.offset,
                length,
                size: region.len(),
            });
        }
        Ok((region, offset))
    }
}

/// A ring inside a mapped region, validated to lie entirely within it.
#[derive(Debug, Clone)]
pub struct Ring {
    mem: Arc<SharedMemory>,
    base: usize,
    log2: u8,
}

impl Ring {
    pub fn new(mem: Arc<SharedMemory>, base: usize, log2: u8) -> Result<Ring, LayoutError> {
        if log2 > MAX_LOG2_RING_SIZE {
            return Err(LayoutError::RingTooLarge(log2));
        }
        if !base.is_multiple_of(align_of::<Descriptor>()) {
            return Err(LayoutError::Misaligned { offset: base });
        }
        let bytes = ring_bytes(log2);
        if !mem.contains(base, bytes) {
            return Err(LayoutError::RingOutOfRegion {
                offset: base,
                bytes,
                region: mem.len(),
            });
        }
        Ok(Ring { mem, base, log2 })
    }

    /// Descriptors in the ring (at most 2^14, so it fits the indices).
    #[inline]
    pub fn size(&self) -> u16 {
        1 << self.log2
    }

    pub fn log2_size(&self) -> u8 {
        self.log2
    }

    #[inline]
    fn slot_offset(&self, index: u16) -> usize {
        let slot = usize::from(index & (self.size() - 1));
        self.base + RING_HEADER_SIZE + slot * DESC_SIZE
    }

    pub fn cookie(&self) -> u32 {
        self.mem
            .read::<u32>(self.base + offset_of!(RingHeader, cookie))
    }

    #[inline]
    pub fn flags(&self) -> u16 {
        self.mem
            .load_u16(self.base + offset_of!(RingHeader, flags), Ordering::Relaxed)
    }

    #[inline]
    pub fn head(&self) -> u16 {
        self.mem
            .load_u16(self.base + offset_of!(RingHeader, head), Ordering::Acquire)
    }

    #[inline]
    pub fn tail(&self) -> u16 {
        self.mem
            .load_u16(self.base + offset_of!(RingHeader, tail), Ordering::Acquire)
    }

    /// Publishes `head`: descriptors written before are visible to the peer.
    #[inline]
    pub fn set_head(&self, head: u16) {
        self.mem.store_u16(
            self.base + offset_of!(RingHeader, head),
            head,
            Ordering::Release,
        )
    }

    /// Publishes `tail`.
    #[inline]
    pub fn set_tail(&self, tail: u16) {
        self.mem.store_u16(
            self.base + offset_of!(RingHeader, tail),
            tail,
            Ordering::Release,
        )
    }

    pub fn set_flags(&self, flags: u16) {
        self.mem.store_u16(
            self.base + offset_of!(RingHeader, flags),
            flags,
            Ordering::Release,
        )
    }

    /// Writes a fresh header: cookie, no flags, empty.
    pub fn init(&self) {
        self.mem
            .write::<u32>(self.base + offset_of!(RingHeader, cookie), COOKIE);
        self.set_flags(0);
        self.set_head(0);
        self.set_tail(0);
    }

    /// A snapshot of the descriptor at ring index `index`.
    #[inline]
    pub fn desc(&self, index: u16) -> Descriptor {
        self.mem.read(self.slot_offset(index))
    }

    #[inline]
    pub fn set_desc(&self, index: u16, desc: Descriptor) {
        self.mem.write(self.slot_offset(index), desc)
    }

    /// Rewrites only the length and flags of a descriptor (the server
    /// filling a buffer the client handed out).
    #[inline]
    pub fn set_desc_length(&self, index: u16, length: u32, flags: u16) {
        let off = self.slot_offset(index);
        self.mem
            .write::<u16>(off + offset_of!(Descriptor, flags), flags);
        self.mem
            .write::<u32>(off + offset_of!(Descriptor, length), length);
    }
}

// ----------------------------------------------------------------- messages

/// A NUL-padded fixed-size string field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize>(pub [u8; N]);

impl<const N: usize> FixedStr<N> {
    /// `s` truncated (at a character boundary) to leave room for a
    /// terminating NUL, as C peers copy these fields with `strlcpy`.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(N - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut b = [0u8; N];
        b[..end].copy_from_slice(&s.as_bytes()[..end]);
        FixedStr(b)
    }

    /// The bytes before the first NUL, as text (lossily).
    pub fn text(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        FixedStr([0; N])
    }
}

impl<const N: usize> std::fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

pub type Name = FixedStr<NAME_SIZE>;
pub type Reason = FixedStr<REASON_SIZE>;

/// The secret field: up to 24 bytes, NUL-padded, compared whole.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Secret(pub [u8; SECRET_SIZE]);

impl Secret {
    /// `None` when `s` is longer than the field.
    pub fn new(s: &str) -> Option<Secret> {
        let mut b = [0u8; SECRET_SIZE];
        b.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Secret(b))
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "none"
        } else {
            "<redacted>"
        })
    }
}

/// Interface modes of the `Init` message.
pub const MODE_ETHERNET: u8 = 0;
pub const MODE_IP: u8 = 1;
pub const MODE_PUNT_INJECT: u8 = 2;

/// Server → client, first message: what the server supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hello {
    pub name: Name,
    pub min_version: u16,
    pub max_version: u16,
    /// Highest region index accepted (count - 1).
    pub max_region: u16,
    /// Highest S2C ring index accepted (`max_m2s_ring`).
    pub max_s2c_ring: u16,
    /// Highest C2S ring index accepted (`max_s2m_ring`).
    pub max_c2s_ring: u16,
    pub max_log2_ring_size: u8,
}

/// Client → server: which interface to connect to, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Init {
    pub version: u16,
    pub id: u32,
    pub mode: u8,
    pub secret: Secret,
    pub name: Name,
}

/// Client → server, with the region's memory file descriptor attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddRegion {
    pub index: u16,
    pub size: u64,
}

/// Client → server, with the ring's interrupt eventfd attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddRing {
    pub flags: u16,
    pub index: u16,
    pub region: u16,
    /// Offset of the ring header in its region.
    pub offset: u32,
    pub log2_ring_size: u8,
    pub private_hdr_size: u16,
}

/// A decoded control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Ack,
    Hello(Hello),
    Init(Init),
    AddRegion(AddRegion),
    AddRing(AddRing),
    /// Client → server: finish; carries the client's interface name.
    Connect(Name),
    /// Server → client: done; carries the server's interface name.
    Connected(Name),
    Disconnect {
        code: u32,
        reason: Reason,
    },
}

/// Message type numbers (`memif_msg_type_t`); 0 is "none".
mod msg_type {
    pub const ACK: u16 = 1;
    pub const HELLO: u16 = 2;
    pub const INIT: u16 = 3;
    pub const ADD_REGION: u16 = 4;
    pub const ADD_RING: u16 = 5;
    pub const CONNECT: u16 = 6;
    pub const CONNECTED: u16 = 7;
    pub const DISCONNECT: u16 = 8;
}

/// Byte offsets of the fields inside the 128-byte message.
mod field {
    use std::ops::Range;

    pub const TYPE: Range<usize> = 0..2;

    pub mod hello {
        use std::ops::Range;
        pub const NAME: Range<usize> = 2..34;
        pub const MIN_VERSION: usize = 34;
        pub const MAX_VERSION: usize = 36;
        pub const MAX_REGION: usize = 38;
        pub const MAX_S2C_RING: usize = 40;
        pub const MAX_C2S_RING: usize = 42;
        pub const MAX_LOG2_RING_SIZE: usize = 44;
    }

    pub mod init {
        use std::ops::Range;
        pub const VERSION: usize = 2;
        pub const ID: usize = 4;
        pub const MODE: usize = 8;
        pub const SECRET: Range<usize> = 9..33;
        pub const NAME: Range<usize> = 33..65;
    }

    pub mod add_region {
        pub const INDEX: usize = 2;
        pub const SIZE: usize = 4;
    }

    pub mod add_ring {
        pub const FLAGS: usize = 2;
        pub const INDEX: usize = 4;
        pub const REGION: usize = 6;
        pub const OFFSET: usize = 8;
        pub const LOG2_RING_SIZE: usize = 12;
        pub const PRIVATE_HDR_SIZE: usize = 13;
    }

    /// Connect and Connected.
    pub const IF_NAME: Range<usize> = 2..34;

    pub mod disconnect {
        use std::ops::Range;
        pub const CODE: usize = 2;
        pub const REASON: Range<usize> = 6..102;
    }
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("control message of {0} bytes, expected {MSG_SIZE}")]
    Length(usize),
    #[error("unknown control message type {0}")]
    UnknownType(u16),
}

fn get_u16(b: &[u8; MSG_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8; MSG_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get_u64(b: &[u8; MSG_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn get_str<const N: usize>(b: &[u8; MSG_SIZE], range: std::ops::Range<usize>) -> [u8; N] {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[range]);
    v
}

impl Message {
    /// Decodes one received datagram. Only the length and the type are
    /// judged here; field values are the handshake's to check.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let b: &[u8; MSG_SIZE] = bytes
            .try_into()
            .map_err(|_| DecodeError::Length(bytes.len()))?;
        let ty = get_u16(b, field::TYPE.start);
        Ok(match ty {
            msg_type::ACK => Message::Ack,
            msg_type::HELLO => {
                use field::hello as f;
                Message::Hello(Hello {
                    name: FixedStr(get_str(b, f::NAME)),
                    min_version: get_u16(b, f::MIN_VERSION),
                    max_version: get_u16(b, f::MAX_VERSION),
                    max_region: get_u16(b, f::MAX_REGION),
                    max_s2c_ring: get_u16(b, f::MAX_S2C_RING),
                    max_c2s_ring: get_u16(b, f::MAX_C2S_RING),
                    max_log2_ring_size: b[f::MAX_LOG2_RING_SIZE],
                })
            }
            msg_type::INIT => {
                use field::init as f;
                Message::Init(Init {
                    version: get_u16(b, f::VERSION),
                    id: get_u32(b, f::ID),
                    mode: b[f::MODE],
                    secret: Secret(get_str(b, f::SECRET)),
                    name: FixedStr(get_str(b, f::NAME)),
                })
            }
            msg_type::ADD_REGION => Message::AddRegion(AddRegion {
                index: get_u16(b, field::add_region::INDEX),
                size: get_u64(b, field::add_region::SIZE),
            }),
            msg_type::ADD_RING => {
                use field::add_ring as f;
                Message::AddRing(AddRing {
                    flags: get_u16(b, f::FLAGS),
                    index: get_u16(b, f::INDEX),
                    region: get_u16(b, f::REGION),
                    offset: get_u32(b, f::OFFSET),
                    log2_ring_size: b[f::LOG2_RING_SIZE],
                    private_hdr_size: get_u16(b, f::PRIVATE_HDR_SIZE),
                })
            }
            msg_type::CONNECT => Message::Connect(FixedStr(get_str(b, field::IF_NAME))),
            msg_type::CONNECTED => Message::Connected(FixedStr(get_str(b, field::IF_NAME))),
            msg_type::DISCONNECT => Message::Disconnect {
                code: get_u32(b, field::disconnect::CODE),
                reason: FixedStr(get_str(b, field::disconnect::REASON)),
            },
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// The 128 bytes on the wire; unused bytes are zero.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        let put16 = |b: &mut [u8; MSG_SIZE], at: usize, v: u16| {
            b[at..at + 2].copy_from_slice(&v.to_le_bytes())
        };
        let put32 = |b: &mut [u8; MSG_SIZE], at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        let ty = match self {
            Message::Ack => msg_type::ACK,
            Message::Hello(h) => {
                use field::hello as f;
                b[f::NAME].copy_from_slice(&h.name.0);
                put16(&mut b, f::MIN_VERSION, h.min_version);
                put16(&mut b, f::MAX_VERSION, h.max_version);
                put16(&mut b, f::MAX_REGION, h.max_region);
                put16(&mut b, f::MAX_S2C_RING, h.max_s2c_ring);
                put16(&mut b, f::MAX_C2S_RING, h.max_c2s_ring);
                b[f::MAX_LOG2_RING_SIZE] = h.max_log2_ring_size;
                msg_type::HELLO
            }
            Message::Init(i) => {
                use field::init as f;
                put16(&mut b, f::VERSION, i.version);
                put32(&mut b, f::ID, i.id);
                b[f::MODE] = i.mode;
                b[f::SECRET].copy_from_slice(&i.secret.0);
                b[f::NAME].copy_from_slice(&i.name.0);
                msg_type::INIT
            }
            Message::AddRegion(r) => {
                put16(&mut b, field::add_region::INDEX, r.index);
                let at = field::add_region::SIZE;
                b[at..at + 8].copy_from_slice(&r.size.to_le_bytes());
                msg_type::ADD_REGION
            }
            Message::AddRing(r) => {
                use field::add_ring as f;
                put16(&mut b, f::FLAGS, r.flags);
                put16(&mut b, f::INDEX, r.index);
                put16(&mut b, f::REGION, r.region);
                put32(&mut b, f::OFFSET, r.offset);
                b[f::LOG2_RING_SIZE] = r.log2_ring_size;
                put16(&mut b, f::PRIVATE_HDR_SIZE, r.private_hdr_size);
                msg_type::ADD_RING
            }
            Message::Connect(name) => {
                b[field::IF_NAME].copy_from_slice(&name.0);
                msg_type::CONNECT
            }
            Message::Connected(name) => {
                b[field::IF_NAME].copy_from_slice(&name.0);
                msg_type::CONNECTED
            }
            Message::Disconnect { code, reason } => {
                put32(&mut b, field::disconnect::CODE, *code);
                b[field::disconnect::REASON].copy_from_slice(&reason.0);
                msg_type::DISCONNECT
            }
        };
        put16(&mut b, field::TYPE.start, ty);
        b
    }

    /// A disconnect message with `reason` (truncated to fit).
    pub fn disconnect(reason: &str) -> Message {
        Message::Disconnect {
            code: 0,
            reason: FixedStr::new(reason),
        }
    }

    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ack => "ack",
            Message::Hello(_) => "hello",
            Message::Init(_) => "init",
            Message::AddRegion(_) => "add_region",
            Message::AddRing(_) => "add_ring",
            Message::Connect(_) => "connect",
            Message::Connected(_) => "connected",
            Message::Disconnect { .. } => "disconnect",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A hello as DPDK 22.11's `net_memif` server sends it.
    fn dpdk_hello_bytes() -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0] = 2; // HELLO
        b[2..2 + 16].copy_from_slice(b"DPDK 22.11.11\0\0\0");
        b[34..36].copy_from_slice(&0x0200u16.to_le_bytes());
        b[36..38].copy_from_slice(&0x0200u16.to_le_bytes());
        b[38..40].copy_from_slice(&255u16.to_le_bytes()); // max_region
        b[40..42].copy_from_slice(&255u16.to_le_bytes()); // max_m2s_ring
        b[42..44].copy_from_slice(&255u16.to_le_bytes()); // max_s2m_ring
        b[44] = 14;
        b
    }

    #[test]
    fn decodes_a_hello_at_the_documented_offsets() {
        let Message::Hello(h) = Message::decode(&dpdk_hello_bytes()).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(h.name.text(), "DPDK 22.11.11");
        assert_eq!((h.min_version, h.max_version), (VERSION, VERSION));
        assert_eq!(
            (h.max_region, h.max_s2c_ring, h.max_c2s_ring),
            (255, 255, 255)
        );
        assert_eq!(h.max_log2_ring_size, 14);
    }

    #[test]
    fn encodes_init_and_add_ring_byte_for_byte() {
        let init = Message::Init(Init {
            version: VERSION,
            id: 0x0102_0304,
            mode: MODE_IP,
            secret: Secret::new("s3cret").unwrap(),
            name: Name::new("caracal"),
        })
        .encode();
        let mut want = [0u8; MSG_SIZE];
        want[0] = 3;
        want[2..4].copy_from_slice(&[0x00, 0x02]);
        want[4..8].copy_from_slice(&[0x04, 0x03, 0x02, 0x01]);
        want[8] = 1;
        want[9..15].copy_from_slice(b"s3cret");
        want[33..40].copy_from_slice(b"caracal");
        assert_eq!(init, want);

        let ring = Message::AddRing(AddRing {
            flags: ADD_RING_FLAG_C2S,
            index: 3,
            region: 1,
            offset: 0x0000_1080,
            log2_ring_size: 10,
            private_hdr_size: 0,
        })
        .encode();
        let mut want = [0u8; MSG_SIZE];
        want[0] = 5;
        want[2] = 1;
        want[4] = 3;
        want[6] = 1;
        want[8..12].copy_from_slice(&[0x80, 0x10, 0, 0]);
        want[12] = 10;
        assert_eq!(ring, want);
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Message::Ack,
            Message::decode(&dpdk_hello_bytes()).unwrap(),
            Message::Init(Init {
                version: VERSION,
                id: 7,
                mode: MODE_ETHERNET,
                secret: Secret::default(),
                name: Name::new("x"),
            }),
            Message::AddRegion(AddRegion {
                index: 2,
                size: 0x1_0000_0000,
            }),
            Message::AddRing(AddRing {
                flags: 0,
                index: 1,
                region: 0,
                offset: 4352,
                log2_ring_size: 14,
                private_hdr_size: 0,
            }),
            Message::Connect(Name::new("memif0/0")),
            Message::Connected(Name::new("default/pod")),
            Message::disconnect("peer misbehaved"),
        ];
        for m in msgs {
            assert_eq!(Message::decode(&m.encode()), Ok(m), "{}", m.kind());
        }
    }

    #[test]
    fn decode_rejects_bad_lengths_and_types() {
        assert_eq!(Message::decode(&[0; 127]), Err(DecodeError::Length(127)));
        assert_eq!(Message::decode(&[]), Err(DecodeError::Length(0)));
        assert_eq!(Message::decode(&[0; 128]), Err(DecodeError::UnknownType(0)));
        let mut b = [0u8; 128];
        b[0] = 9;
        assert_eq!(Message::decode(&b), Err(DecodeError::UnknownType(9)));
    }

    #[test]
    fn fixed_strings_truncate_at_char_boundaries_and_keep_a_nul() {
        let n = Name::new(&"é".repeat(20));
        assert_eq!(n.0[31], 0);
        assert_eq!(n.text(), "é".repeat(15));
        assert_eq!(Name::new("").text(), "");
        assert!(Secret::new(&"x".repeat(24)).is_some());
        assert!(Secret::new(&"x".repeat(25)).is_none());
        assert!(Secret::default().is_empty());
        assert_eq!(format!("{:?}", Secret::new("a").unwrap()), "<redacted>");
    }

    fn mapping(len: usize) -> Arc<SharedMemory> {
        let fd = super::super::sys::memfd_create(c"caracal-abi-test", false).unwrap();
        std::fs::File::from(fd.try_clone().unwrap())
            .set_len(len as u64)
            .unwrap();
        Arc::new(SharedMemory::map(fd.as_fd(), len, 4096).unwrap())
    }

    #[test]
    fn rings_must_lie_inside_their_region() {
        let mem = mapping(4096);
        assert_eq!(ring_bytes(4), 128 + 256);
        assert!(Ring::new(mem.clone(), 4096 - 384, 4).is_ok());
        assert_eq!(
            Ring::new(mem.clone(), 4096 - 380, 4).unwrap_err(),
            LayoutError::RingOutOfRegion {
                offset: 3716,
                bytes: 384,
                region: 4096
            }
        );
        assert_eq!(
            Ring::new(mem.clone(), 2, 1).unwrap_err(),
            LayoutError::Misaligned { offset: 2 }
        );
        assert_eq!(
            Ring::new(mem.clone(), 0, 15).unwrap_err(),
            LayoutError::RingTooLarge(15)
        );
        assert!(Ring::new(mem, usize::MAX - 3, 0).is_err());
    }

    #[test]
    fn ring_fields_sit_at_their_abi_offsets() {
        let mem = mapping(4096);
        let ring = Ring::new(mem.clone(), 256, 2).unwrap();
        ring.init();
        ring.set_head(0x1234);
        ring.set_tail(0x5678);
        ring.set_flags(RING_FLAG_MASK_INT);
        let d = Descriptor {
            flags: DESC_FLAG_NEXT,
            region: 1,
            length: 60,
            offset: 4096,
            metadata: 0,
        };
        ring.set_desc(5, d); // slot 1 of 4
        let header: RingHeader = mem.read(256);
        assert_eq!(header.cookie, COOKIE);
        assert_eq!(
            (header.flags, header.head, header.tail),
            (1, 0x1234, 0x5678)
        );
        assert_eq!(mem.read::<Descriptor>(256 + 128 + 16), d);
        assert_eq!(ring.desc(1), d);
        ring.set_desc_length(1, 42, 0);
        assert_eq!(
            ring.desc(5),
            Descriptor {
                flags: 0,
                length: 42,
                ..d
            }
        );
    }

    #[test]
    fn descriptors_are_checked_against_regions() {
        let regions = vec![mapping(4096), mapping(8192)];
        let d = |region, offset| Descriptor {
            region,
            offset,
            ..Descriptor::default()
        };
        assert!(d(0, 4032).validate(&regions, 64).is_ok());
        assert!(d(1, 8191).validate(&regions, 1).is_ok());
        assert!(d(0, 4033).validate(&regions, 64).is_err());
        assert!(d(2, 0).validate(&regions, 1).is_err());
        assert!(d(0, u32::MAX).validate(&regions, u32::MAX).is_err());
        let (mem, off) = d(1, 100).validate(&regions, 10).unwrap();
        assert_eq!((mem.len(), off), (8192, 100));
    }
}
