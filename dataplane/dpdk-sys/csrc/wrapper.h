/* The DPDK headers bindgen reads (see build.rs for the allowlist). */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_acl.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>
#include <rte_cycles.h>

#include "shim.h"
