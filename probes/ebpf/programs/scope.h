/*
 * scope.h - what every program shares: which processes it traces, and the helpers they all use.
 *
 * Included by every programs/NAME.bpf.c before its own maps; probes/ebpf/loader.py inlines it, so what is
 * compiled (and what --print-bpf shows) is one text. probes/ebpf/scope.py (ScopedProbe) is its user side: it
 * fills mqi_tgids and gives the defines. In a program that combines several probes (probes/ebpf/combined.py)
 * it comes once, before their parts: they share one mqi_tgids. Nothing here may be one probe's alone.
 *
 * Maps:
 *   mqi_tgids     the tgids to trace, filled from user space (used when FILTER_TGIDS is 1); user space takes a
 *                 process out when it exits, so a new process reusing its pid is not traced
 *
 * Defines (integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS  1 to trace only the processes in mqi_tgids, 0 for every process
 *   MAX_TGIDS     entries of mqi_tgids (and of each program's per-process maps)
 *   IGNORE_TGID   the tracer itself, left out when every process is traced: its own reads of /proc, faults
 *                 and mmaps are noise
 */

BPF_HASH(mqi_tgids, u32, u8, MAX_TGIDS);

/* Whether the process `tgid` is traced. */
static __always_inline int tgid_traced(u32 tgid)
{
#if FILTER_TGIDS
    return mqi_tgids.lookup(&tgid) != NULL;
#else
    return tgid != 0 && tgid != IGNORE_TGID;
#endif
}

/* The pages of a folio of 2^order pages. */
static __always_inline u64 folio_pages(u32 order)
{
    return 1ULL << (order & 31);  /* the mask keeps the shift defined whatever the field holds */
}
