//! The XDP program that steers an interface queue's packets to the
//! socket, without libbpf: an XSKMAP created with `bpf(BPF_MAP_CREATE)`,
//! a five-instruction program assembled here from the eBPF instruction
//! set and loaded with `bpf(BPF_PROG_LOAD)`, attached to the interface
//! over rtnetlink (`RTM_SETLINK` with `IFLA_XDP`) and detached when the
//! [`XdpProgram`] is dropped.
//!
//! The program is, in C:
//!
//! ```c
//! return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
//! ```
//!
//! Since Linux 5.8 the low bits of `bpf_redirect_map`'s flags are the
//! action when the map has no socket for the key, so packets of other
//! queues (or before the socket is in the map) go on to the kernel stack.
//! `bpf_redirect_map` is not a GPL-only helper; the license string is the
//! project's.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;

use super::sys;
use crate::port::tap::netlink::RtnlSocket;

/// `XDP_FLAGS_*` of `IFLA_XDP_FLAGS` (<linux/if_link.h>).
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// `enum xdp_action`: `XDP_PASS`.
const XDP_PASS: i32 = 2;
/// `enum bpf_func_id`: `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `offsetof(struct xdp_md, rx_queue_index)` (<linux/bpf.h>: `data`,
/// `data_end`, `data_meta`, `ingress_ifindex`, then `rx_queue_index`,
/// all `__u32`).
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// `src_reg` of a 64-bit immediate load that names a map by fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;

// Opcode parts (<linux/bpf_common.h>, <linux/bpf.h>).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

/// License string of the program.
const LICENSE: &str = "Apache-2.0";

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The 8 bytes the kernel reads: opcode, `dst_reg` in the low and
    /// `src_reg` in the high nibble, then offset and immediate, both
    /// little-endian (the instruction set is defined in host order; this
    /// driver builds only for little-endian Linux targets).
    pub fn encode(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    /// `dst = *(u32 *)(src + off)`.
    fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn {
            code: BPF_LDX | BPF_MEM | BPF_W,
            dst,
            src,
            off,
            imm: 0,
        }
    }

    /// `dst = map` (two instruction slots).
    fn load_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [
            Insn {
                code: BPF_LD | BPF_DW | BPF_IMM,
                dst,
                src: BPF_PSEUDO_MAP_FD,
                off: 0,
                imm: fd,
            },
            // The upper 32 bits of the immediate (none for a map fd).
            Insn {
                code: 0,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            },
        ]
    }

    /// `dst = imm` (64-bit move).
    fn mov_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: BPF_ALU64 | BPF_MOV | BPF_K,
            dst,
            src: 0,
            off: 0,
            imm,
        }
    }

    fn call(helper: i32) -> Insn {
        Insn {
            code: BPF_JMP | BPF_CALL,
            dst: 0,
            src: 0,
            off: 0,
            imm: helper,
        }
    }

    fn exit() -> Insn {
        Insn {
            code: BPF_JMP | BPF_EXIT,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        }
    }
}

/// The redirect program for XSKMAP `map_fd`. On entry `r1` is the
/// `xdp_md` context; the helper takes `r1..r3` and returns in `r0`.
pub fn redirect_program(map_fd: i32) -> Vec<Insn> {
    let [map_lo, map_hi] = Insn::load_map_fd(1, map_fd);
    vec![
        Insn::load_u32(2, 1, XDP_MD_RX_QUEUE_INDEX),
        map_lo,
        map_hi,
        Insn::mov_imm(3, XDP_PASS),
        Insn::call(BPF_FUNC_REDIRECT_MAP),
        Insn::exit(),
    ]
}

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Driver,
    /// Generic XDP, after the kernel built an skb (any interface).
    Skb,
}

impl AttachMode {
    pub fn flag(self) -> u32 {
        match self {
            AttachMode::Driver => XDP_FLAGS_DRV_MODE,
            AttachMode::Skb => XDP_FLAGS_SKB_MODE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
        }
    }
}

/// `RTM_SETLINK` of interface `ifindex` with the given `IFLA_XDP` nest.
fn set_xdp(ifindex: u32, xdp: Vec<LinkXdp>) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Xdp(xdp));
    RouteNetlinkMessage::SetLink(link)
}

/// The request that attaches program `prog_fd` in `mode`, refusing to
/// replace a program someone else attached.
pub fn attach_request(ifindex: u32, prog_fd: i32, mode: AttachMode) -> RouteNetlinkMessage {
    set_xdp(
        ifindex,
        vec![
            LinkXdp::Fd(prog_fd),
            LinkXdp::Flags(XDP_FLAGS_UPDATE_IF_NOEXIST | mode.flag()),
        ],
    )
}

/// The request that detaches program `prog_fd`, and only it
/// (`XDP_FLAGS_REPLACE` with `IFLA_XDP_EXPECTED_FD`, Linux 5.7).
pub fn detach_request(ifindex: u32, prog_fd: i32, mode: AttachMode) -> RouteNetlinkMessage {
    set_xdp(
        ifindex,
        vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(XDP_FLAGS_REPLACE | mode.flag()),
            LinkXdp::ExpectedFd(prog_fd as u32),
        ],
    )
}

/// An XSKMAP and the redirect program, attached to an interface;
/// detached on drop.
#[derive(Debug)]
pub struct XdpProgram {
    // The rtnetlink socket of the interface's namespace, kept to detach
    // from any thread.
    rtnl: RtnlSocket,
    ifindex: u32,
    mode: AttachMode,
    prog: OwnedFd,
    map: OwnedFd,
}

/// Why the program could not be set up; `what` names the failed step.
#[derive(Debug)]
pub struct ProgramError {
    pub what: &'static str,
    pub source: io::Error,
}

impl XdpProgram {
    /// Creates a map of `entries` sockets and the program, and attaches
    /// it to `ifindex` in the first of `modes` the kernel accepts, over a
    /// netlink socket of the calling thread's namespace.
    pub fn attach(
        ifindex: u32,
        entries: u32,
        modes: &[AttachMode],
    ) -> Result<XdpProgram, ProgramError> {
        let err = |what| move |source| ProgramError { what, source };
        let map = sys::create_xskmap("caracal_xsks", entries)
            .map_err(err("bpf(BPF_MAP_CREATE, XSKMAP)"))?;
        let code: Vec<u8> = redirect_program(map.as_raw_fd())
            .into_iter()
            .flat_map(Insn::encode)
            .collect();
        let prog = sys::load_xdp_program("caracal_xsk", &code, LICENSE)
            .map_err(err("bpf(BPF_PROG_LOAD, XDP)"))?;
        let mut rtnl = RtnlSocket::open().map_err(err("rtnetlink socket"))?;
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for &mode in modes {
            match rtnl.execute(attach_request(ifindex, prog.as_raw_fd(), mode), 0) {
                Ok(()) => {
                    return Ok(XdpProgram {
                        rtnl,
                        ifindex,
                        mode,
                        prog,
                        map,
                    })
                }
                Err(e) => {
                    tracing::debug!("XDP attach in {} mode: {e}", mode.as_str());
                    last = e;
                }
            }
        }
        Err(ProgramError {
            what: "attach the XDP program (RTM_SETLINK IFLA_XDP)",
            source: last,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Steers queue `queue`'s packets to socket `xsk` (bound already).
    pub fn insert(&self, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
        sys::xskmap_set(self.map.as_fd(), queue, xsk)
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        let fd = self.prog.as_raw_fd();
        let detached = self
            .rtnl
            .execute(detach_request(self.ifindex, fd, self.mode), 0)
            .or_else(|e| {
                // Before Linux 5.7 (no XDP_FLAGS_REPLACE): detach whatever
                // runs in our mode, which is ours.
                tracing::debug!("XDP detach with expected fd: {e}");
                self.rtnl.execute(
                    set_xdp(
                        self.ifindex,
                        vec![LinkXdp::Fd(-1), LinkXdp::Flags(self.mode.flag())],
                    ),
                    0,
                )
            });
        if let Err(e) = detached {
            // The interface may be gone with its namespace: then so is
            // the program.
            tracing::debug!("XDP detach from ifindex {}: {e}", self.ifindex);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_program_encodes_to_the_expected_bytes() {
        let code: Vec<[u8; 8]> = redirect_program(7).into_iter().map(Insn::encode).collect();
        assert_eq!(
            code,
            [
                // r2 = *(u32 *)(r1 + 16)
                [0x61, 0x12, 16, 0, 0, 0, 0, 0],
                // r1 = map fd 7 (ld_imm64, src_reg = BPF_PSEUDO_MAP_FD)
                [0x18, 0x11, 0, 0, 7, 0, 0, 0],
                [0, 0, 0, 0, 0, 0, 0, 0],
                // r3 = XDP_PASS
                [0xb7, 0x03, 0, 0, 2, 0, 0, 0],
                // call bpf_redirect_map
                [0x85, 0x00, 0, 0, 51, 0, 0, 0],
                // exit
                [0x95, 0x00, 0, 0, 0, 0, 0, 0],
            ]
        );
    }

    #[test]
    fn negative_fields_are_twos_complement_little_endian() {
        let i = Insn {
            code: 0x61,
            dst: 0xf,
            src: 0xa,
            off: -2,
            imm: -1,
        };
        assert_eq!(i.encode(), [0x61, 0xaf, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn attach_refuses_to_replace_and_detach_names_the_program() {
        let RouteNetlinkMessage::SetLink(m) = attach_request(3, 9, AttachMode::Driver) else {
            panic!()
        };
        assert_eq!(m.header.index, 3);
        assert_eq!(
            m.attributes,
            [LinkAttribute::Xdp(vec![
                LinkXdp::Fd(9),
                LinkXdp::Flags(XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_DRV_MODE)
            ])]
        );
        let RouteNetlinkMessage::SetLink(m) = detach_request(3, 9, AttachMode::Skb) else {
            panic!()
        };
        assert_eq!(
            m.attributes,
            [LinkAttribute::Xdp(vec![
                LinkXdp::Fd(-1),
                LinkXdp::Flags(XDP_FLAGS_REPLACE | XDP_FLAGS_SKB_MODE),
                LinkXdp::ExpectedFd(9)
            ])]
        );
    }
}
