/*
 * What bindgen cannot bind: DPDK's inline functions and macros, wrapped in
 * real functions. Implemented in shim.c.
 */
#ifndef CARACAL_DPDK_SHIM_H
#define CARACAL_DPDK_SHIM_H

#include <stdint.h>

struct rte_lpm;

/* The calling thread's rte_errno (a per-lcore TLS variable behind a macro). */
int caracal_rte_errno(void);

/* rte_lpm_lookup (static inline): 0 and *next_hop on a hit, -ENOENT on a miss. */
int caracal_rte_lpm_lookup(const struct rte_lpm *lpm, uint32_t ip, uint32_t *next_hop);

/*
 * rte_lpm_lookup_bulk (a macro over a static inline function). n is at most
 * CARACAL_LPM_BULK_MAX (the inline function keeps n indexes on the stack).
 * Each next_hops[i] is the raw table entry: bit 24 (RTE_LPM_LOOKUP_SUCCESS)
 * set on a hit, the next hop in bits 0..24.
 */
#define CARACAL_LPM_BULK_MAX 256
int caracal_rte_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips,
				uint32_t *next_hops, unsigned int n);

/* rte_rdtsc (static inline); Rust uses the intrinsic where it has one. */
uint64_t caracal_rte_rdtsc(void);

#endif
