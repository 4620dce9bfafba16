/* Real functions around DPDK's inline functions and macros; see shim.h. */
#include <rte_errno.h>
#include <rte_lpm.h>
#include <rte_cycles.h>

#include "shim.h"

int caracal_rte_errno(void)
{
	return rte_errno;
}

int caracal_rte_lpm_lookup(const struct rte_lpm *lpm, uint32_t ip, uint32_t *next_hop)
{
	return rte_lpm_lookup(lpm, ip, next_hop);
}

int caracal_rte_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips,
				uint32_t *next_hops, unsigned int n)
{
	if (n > CARACAL_LPM_BULK_MAX)
		return -EINVAL;
	return rte_lpm_lookup_bulk(lpm, ips, next_hops, n);
}

uint64_t caracal_rte_rdtsc(void)
{
	return rte_rdtsc();
}
