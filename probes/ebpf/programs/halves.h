/*
 * halves.h - per-interval maps that user space empties without losing an event.
 *
 * Included by programs that drain maps every interval; probes/ebpf/loader.py inlines it. probes/ebpf/scope.py
 * (HalvedMaps) is its user side. It is each program's own: in a combined program (probes/ebpf/combined.py)
 * every probe that includes it has its own mqi_half, switched by its own HalvedMaps.
 *
 * Why: a handler adds to an entry through the pointer lookup_or_try_init gave it. When user space empties
 * the map meanwhile (batch lookup-and-delete), the entry is copied and removed between the handler's lookup
 * and its adds, and those adds land in the removed entry: lost. Measured here (pagecache, one process adding
 * about 150,000 pages a second, drained 37,807 times in 20 s): its rows summed to 236 pages fewer than the
 * totals, which are never drained; a new segment warmed across an interval's end lost a few pages so.
 *
 * How: each drained map NAME is two maps, NAME_0 and NAME_1 (declared by the program), and handlers write
 * the half mqi_half[0] names. At the end of an interval user space names the other half, waits until every
 * handler that may still write the old one has returned (an RCU grace period: tracepoint handlers run
 * inside an RCU read-side section, with preemption off), then empties the old half, which nothing writes.
 *
 * Maps:
 *   mqi_half   [0]: the half (0 or 1) the handlers write; set by user space only
 */

BPF_ARRAY(mqi_half, u32, 1);

/* The half of the drained maps handlers write now. */
static __always_inline u32 writing_half(void)
{
    u32 zero = 0;
    u32 *half = mqi_half.lookup(&zero);
    return half ? *half & 1 : 0;
}
