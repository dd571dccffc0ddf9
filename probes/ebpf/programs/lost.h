/*
 * lost.h - records that did not fit a program's maps, counted apart.
 *
 * Included (after scope.h) by the programs whose records can be lost: sendpath.bpf.c and syscalls.bpf.c (the
 * others count such events in their totals). It is each program's own: in a combined program
 * (probes/ebpf/combined.py) every probe that includes it has its own mqi_lost. probes/ebpf/scope.py
 * (LostRecords) is its user side.
 *
 * Maps:
 *   mqi_lost   [0]: events whose record did not fit the program's maps (cumulative; count_lost())
 */

BPF_ARRAY(mqi_lost, u64, 1);

/* One more event whose record did not fit the program's maps. */
static __always_inline void count_lost(void)
{
    int first = 0;
    u64 *lost = mqi_lost.lookup(&first);
    if (lost)
        __sync_fetch_and_add(lost, 1);
}
