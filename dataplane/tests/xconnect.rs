//! L2 cross-connect end to end: the real `caracal-dataplane` binary, whose
//! TOML configuration declares two memif servers cross-connected both ways
//! (the "memif I/O floor" set-up of the benchmarks), and two of our own
//! memif clients as the peers. Every frame one client sends arrives
//! unchanged at the other, in both directions, and `GetRuntime` counts the
//! packets under `l2-xconnect` and none under `ethernet-input`.
//!
//! memif over abstract sockets needs no privilege, so this runs as any
//! user.

mod common;

use std::time::Duration;

use caracal_control::dataplane_client::{runtime_delta, DataplaneClient};
use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig};
use caracal_wire::EthernetAddress;
use common::{block_on, Daemon, MemifPeer};

/// Frames per direction.
const FRAMES: usize = 5_000;
/// Frames in flight at a time (well below the clients' 256-slot rings).
const BURST: usize = 32;

/// One of our memif clients, the peer of one of the dataplane's ports.
fn connect_peer(socket: &str) -> MemifPeer {
    MemifPeer::connect(
        "peer",
        socket,
        EthernetAddress::BROADCAST,
        Duration::from_secs(10),
    )
}

/// Frame `i`: 60 to 1514 bytes, contents unique to it. Not even an
/// Ethernet frame for us: nothing looks inside.
fn frame(i: usize, tag: u8) -> Vec<u8> {
    let len = 60 + (i * 97) % (1514 - 60 + 1);
    let mut f: Vec<u8> = (0..len).map(|j| (i + j) as u8 ^ tag).collect();
    f[..4].copy_from_slice(&(i as u32).to_be_bytes());
    f
}

/// Sends every frame from `from` and checks each arrives intact at `to`.
fn pass(from: &mut MemifPeer, to: &mut MemifPeer, cache: &mut BufferCache, tag: u8) {
    for start in (0..FRAMES).step_by(BURST) {
        let frames: Vec<Vec<u8>> = (start..(start + BURST).min(FRAMES))
            .map(|i| frame(i, tag))
            .collect();
        from.send(cache, &frames);
        let got = to.recv(cache, frames.len(), Duration::from_secs(5));
        assert_eq!(
            got.len(),
            frames.len(),
            "frames {start}.. lost: {:?}",
            to.port.status()
        );
        assert!(got == frames, "frames {start}.. changed or reordered");
    }
}

fn node(r: &caracal_proto::dataplane::Runtime, name: &str) -> u64 {
    r.workers
        .iter()
        .flat_map(|w| &w.nodes)
        .filter(|n| n.name == name)
        .map(|n| n.vectors)
        .sum()
}

#[test]
fn memif_ports_cross_connected_from_the_config_file() {
    let tag = common::unique("xc");
    let (sock_a, sock_b) = (format!("@{tag}-a"), format!("@{tag}-b"));
    let config = std::env::temp_dir().join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[[interfaces]]
name = "memif-a"
xconnect = "memif-b"
[interfaces.memif]
socket = "{sock_a}"
role = "server"
id = 0
mode = "ethernet"
queues = 1
ring_size = 1024

[[interfaces]]
name = "memif-b"
xconnect = "memif-a"
memif = {{ socket = "{sock_b}", role = "server", queues = 1 }}
"#
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&["--config", config.to_str().unwrap(), "--no-hugepages"]);
    let mut client: DataplaneClient = daemon.client();

    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 1024,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut a = connect_peer(&sock_a);
    let mut b = connect_peer(&sock_b);

    let before = block_on(client.runtime()).expect("GetRuntime");
    pass(&mut a, &mut b, &mut cache, 0x00);
    pass(&mut b, &mut a, &mut cache, 0x5a);
    let after = block_on(client.runtime()).expect("GetRuntime");

    assert!(after.tsc_hz > 0);
    let both = 2 * FRAMES as u64;
    assert_eq!(
        node(&after, "l2-xconnect") - node(&before, "l2-xconnect"),
        both
    );
    assert_eq!(node(&after, "ethernet-input"), 0);
    assert_eq!(node(&after, "ip4-input"), 0);
    let delta = &runtime_delta(&before, &after)[0];
    assert_eq!(delta.rx_packets(), both);
    assert_eq!(delta.node("port-output").unwrap().vectors, both);
    let cpp = delta.cycles_per_packet().expect("packets were received");
    assert!(cpp > 0.0, "{delta:?}");
    eprintln!(
        "memif xconnect: {cpp:.0} busy cycles/packet (adaptive worker, lockstep bursts of {BURST})"
    );

    // No drops, and every buffer back.
    let counters = common::counters(&client);
    assert!(counters.drops.is_empty(), "{:?}", counters.drops);
    common::assert_no_buffer_in_use(&client);

    block_on(client.clear_runtime()).expect("ClearRuntime");
    let cleared = block_on(client.runtime()).expect("GetRuntime");
    assert_eq!(node(&cleared, "l2-xconnect"), 0);
    assert_eq!(node(&cleared, "port-input"), 0);

    drop((a, b));
    assert!(daemon.stop(), "the dataplane exits 0");
    let _ = std::fs::remove_file(&config);
}

#[test]
fn a_bad_interface_in_the_config_file_stops_the_daemon() {
    let config = std::env::temp_dir().join(format!("{}.toml", common::unique("xcbad")));
    std::fs::write(
        &config,
        "[[interfaces]]\nname = \"x\"\nxconnect = \"x\"\nmemif = { socket = \"@caracal-xc-bad\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_caracal-dataplane"))
        .args(["--config", config.to_str().unwrap(), "--socket"])
        .arg(std::env::temp_dir().join(common::unique("xcbad.sock")))
        .args(["--workers", "1", "--buffers", "1024", "--no-hugepages"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interface \"x\"") && stderr.contains("cross-connected to itself"),
        "{stderr}"
    );
}
