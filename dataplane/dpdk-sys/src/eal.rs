//! The Environment Abstraction Layer: initialised once per process (DPDK
//! cannot initialise it twice, nor again after `rte_eal_cleanup`), so
//! [`Eal::init`] runs `rte_eal_init` on its first call and hands every
//! caller, on any thread, the same `&'static Eal`.
//!
//! The arguments keep DPDK off the machine's shared resources: no
//! hugepages (`--no-huge`: memory is `memory_mb` of ordinary pages, touched
//! only as it is used), no PCI scan (`--no-pci`), no shared runtime
//! directory or multi-process socket (`--no-shconf`, and a per-process
//! `--file-prefix` besides), no telemetry socket, one lcore: the CPU the
//! caller runs on. `rte_eal_init` pins the calling thread to that lcore;
//! [`Eal::init`] restores the thread's previous CPU affinity afterwards,
//! so callers (and threads they spawn later) are not left pinned.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use crate::error::{rte_errno, strerror, DpdkError};
use crate::sys;

/// How to start the EAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// Size of DPDK's heap, MiB (`-m`). Ordinary pages, reserved up front
    /// but backed only as DPDK allocates: `rte_lpm` takes 64 MiB at
    /// creation, and a million IPv6 prefixes in `rte_lpm6` about 1 GiB.
    pub memory_mb: u32,
    /// `--force-max-simd-bitwidth`: DPDK 22.11 uses 256-bit code paths by
    /// default on x86; 512 lets `rte_acl` pick its AVX-512 classifiers on
    /// CPUs that have them, as DPDK's own performance reports do.
    pub max_simd_bitwidth: Option<u16>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            memory_mb: 2048,
            max_simd_bitwidth: Some(512),
        }
    }
}

/// Proof that the EAL is running; DPDK objects are made from it.
#[derive(Debug)]
pub struct Eal {
    config: EalConfig,
    lcore_cpu: u32,
    tsc_hz: u64,
}

static EAL: OnceLock<Result<Eal, DpdkError>> = OnceLock::new();

impl Eal {
    /// Starts the EAL with [`EalConfig::default`], or returns the running
    /// one. A failed start is remembered: every later call returns the
    /// same error.
    pub fn init() -> Result<&'static Eal, DpdkError> {
        Self::init_with(EalConfig::default())
    }

    /// Starts the EAL with `config`, or returns the running one, whatever
    /// configuration it was started with (see [`Eal::config`]).
    pub fn init_with(config: EalConfig) -> Result<&'static Eal, DpdkError> {
        EAL.get_or_init(|| Eal::start(config))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The configuration the EAL was started with.
    pub fn config(&self) -> &EalConfig {
        &self.config
    }

    /// The CPU given to the EAL as its one lcore (`-l`).
    pub fn lcore_cpu(&self) -> u32 {
        self.lcore_cpu
    }

    /// Time-stamp counter frequency, Hz, as DPDK measured it at start.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Bytes currently allocated from DPDK's heap, over every NUMA socket.
    /// The difference across a DPDK object's creation is that object's
    /// memory, if no other thread allocates meanwhile.
    pub fn heap_allocated_bytes(&self) -> usize {
        // SAFETY: no preconditions once the EAL runs (`self` proves it).
        let sockets = unsafe { sys::rte_socket_count() };
        (0..sockets)
            .map(|i| {
                // SAFETY: `i` is below rte_socket_count().
                let socket = unsafe { sys::rte_socket_id_by_idx(i) };
                let mut stats = sys::rte_malloc_socket_stats::default();
                // SAFETY: `stats` is a valid, writable struct of the type
                // the function fills; the EAL runs.
                let rc = unsafe { sys::rte_malloc_get_socket_stats(socket, &mut stats) };
                if rc == 0 {
                    stats.heap_allocsz_bytes
                } else {
                    0
                }
            })
            .sum()
    }

    fn start(config: EalConfig) -> Result<Eal, DpdkError> {
        let cpu = current_cpu();
        let mut args = vec![
            "caracal".to_owned(),
            "--no-huge".to_owned(),
            "-m".to_owned(),
            config.memory_mb.to_string(),
            "--no-pci".to_owned(),
            "--no-shconf".to_owned(),
            "--no-telemetry".to_owned(),
            "--file-prefix".to_owned(),
            format!("caracal-{}", std::process::id()),
            "-l".to_owned(),
            cpu.to_string(),
            "--log-level=error".to_owned(),
        ];
        if let Some(bits) = config.max_simd_bitwidth {
            args.push(format!("--force-max-simd-bitwidth={bits}"));
        }
        let joined = args.join(" ");
        // The EAL may keep pointers into argv (it runs once per process),
        // so the strings are leaked rather than freed after the call.
        let mut argv: Vec<*mut c_char> = args
            .into_iter()
            .map(|a| {
                CString::new(a)
                    .expect("EAL arguments contain no NUL")
                    .into_raw()
            })
            .collect();
        let argc = i32::try_from(argv.len()).expect("a handful of arguments");
        let affinity = Affinity::current();
        // SAFETY: argv holds argc valid, NUL-terminated, writable strings
        // that live for the rest of the process; the EAL was never
        // initialised in this process (guarded by the OnceLock).
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        let errno = rte_errno();
        if let Some(a) = affinity {
            a.restore();
        }
        if rc < 0 {
            return Err(DpdkError::EalInit {
                args: joined,
                errno,
                message: strerror(errno),
            });
        }
        // SAFETY: the EAL runs; the call reads a value it measured at init.
        let tsc_hz = unsafe { sys::rte_get_tsc_hz() };
        Ok(Eal {
            config,
            lcore_cpu: cpu,
            tsc_hz,
        })
    }
}

/// The CPU the calling thread runs on (0 if the kernel will not say).
fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(0)
}

/// A thread's CPU affinity mask, to put back after `rte_eal_init` pins the
/// thread to its lcore.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn current() -> Option<Self> {
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0
        // is the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        (rc == 0).then_some(Affinity(set))
    }

    #[cfg(test)]
    fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below CPU_SETSIZE, within the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &self.0) })
            .collect()
    }

    fn restore(&self) {
        // SAFETY: `self.0` is a valid cpu_set_t of the size passed, read
        // from this thread earlier; pid 0 is the calling thread. Failure
        // leaves the thread pinned, which is harmless.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
        }
    }
}

/// The time-stamp counter: a cycle count at a constant rate
/// ([`Eal::tsc_hz`]), for measuring short intervals on one core. Not
/// serialising: the CPU may execute it a few instructions early or late.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc reads a counter; it has no preconditions and every
        // x86_64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the shim reads the CPU's cycle counter; no preconditions.
        unsafe { sys::caracal_rte_rdtsc() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EAL starts (as root, without hugepages), reports a plausible
    /// TSC rate, is the same object on every call and every thread, and
    /// leaves the caller's CPU affinity as it was.
    #[test]
    fn init_once() {
        let cpus = || Affinity::current().map(|a| a.cpus());
        let before = cpus();
        let eal = Eal::init().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cpus(), before, "CPU affinity restored");
        assert!(eal.tsc_hz() > 100_000_000, "TSC at {} Hz", eal.tsc_hz());
        let again = std::thread::spawn(|| Eal::init().map(|e| e as *const Eal as usize))
            .join()
            .unwrap();
        assert_eq!(again, Ok(eal as *const Eal as usize));
        let t0 = rdtsc();
        assert!(rdtsc() >= t0);
    }
}
