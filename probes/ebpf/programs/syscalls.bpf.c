/*
 * syscalls.bpf.c - the memory and flushing syscalls of the traced processes: how often each ran, how long
 * it took (log2 histograms of nanoseconds), and what it was aimed at (a descriptor or an address).
 *
 * Loaded by probes/ebpf/syscalls.py through bcc. Every parameter arrives as an integer -D define (below);
 * the set of processes to trace arrives as entries of a hash map. Nothing else varies. Tracepoint fields are
 * read by name (args->field: bcc builds each struct from the event's format file).
 *
 * These are the calls that warm a mapped store up (mmap, madvise WILLNEED / POPULATE_*, mlock, mincore),
 * flush it (msync, fsync, fdatasync), drop it (fadvise64 DONTNEED, munmap, munlock): their counts and
 * latencies show when a broker warms up or flushes, and how long it waits for it.
 *
 * Tracepoints, and why each one:
 *   syscalls:sys_enter_{mmap,munmap,madvise,mlock,mlock2,munlock,msync,fadvise64,mincore,fsync,fdatasync}
 *                                 the start time and the arguments: the target (the descriptor for mmap,
 *                                 fadvise64, fsync and fdatasync; the start address for the others), the
 *                                 length, and the advice or flags (madvise, fadvise64, msync, mlock2, mmap).
 *                                 Kept per thread (mqi_inflight) until the call returns.
 *   syscalls:sys_exit_*  (the same 11)
 *                                 the end time and the return value (negative: an error). One function serves
 *                                 all 11 exits: their records are identical (__syscall_nr, ret). mmap's return
 *                                 value is the new mapping's address: kept with its descriptor, so that calls
 *                                 on a mapping that is gone before user space reads /proc/PID/maps still
 *                                 name their file.
 *
 * Maps (tgid = process id, tid = thread id); cumulative, never drained (user space takes differences),
 * except mqi_mappings:
 *   mqi_tgids        the tgids to trace (scope.h: tgid_traced() asks it when FILTER_TGIDS is 1)
 *   mqi_inflight     per thread: the traced call in progress (LRU: threads that exit mid-call age out)
 *   mqi_latency      per (tgid, syscall, log2 slot): calls whose duration in ns fell in the slot. Slot s
 *                    holds [2^(s-1), 2^s - 1] ns (bcc's bpf_log2l; slot 0 holds 0 ns)
 *   mqi_calls        per (tgid, syscall, detail, target): calls, errors, total ns, length bytes of
 *                    successful calls
 *   mqi_mappings     per (tgid, address) of a successful mmap: its length and descriptor (-1: anonymous).
 *                    Drained by user space every interval.
 *   mqi_lost         [0]: calls whose record did not fit mqi_latency, mqi_calls or mqi_mappings (lost.h)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS                1 to trace only mqi_tgids, 0 for every process
 *   IGNORE_TGID                 the tracer itself, left out when every process is traced
 *   MAX_TGIDS, MAX_THREADS, MAX_LATENCY_SLOTS, MAX_RECORDS, MAX_MAPPINGS   map sizes
 *   LAST_SLOT                   the highest slot; longer calls are counted in it
 *   MMAP_FLAGS_SHOWN            the mmap flags kept as its detail (sharing, anonymous, locked, populate)
 *   SYSCALL_MMAP ... SYSCALL_FDATASYNC    the id of each syscall in map keys (user space names them)
 */

struct inflight {
    u64 started_ns;
    u64 target;         /* a descriptor (sign-extended) or a start address */
    u64 length;         /* bytes named by the call */
    u32 syscall;        /* SYSCALL_* */
    u32 detail;         /* advice or flags; 0 when the call has none */
    s32 syscall_nr;     /* the kernel's number, checked at exit against a stale entry of a reused tid */
    u32 pad;
};

struct latency_key {
    u32 tgid;
    u32 syscall;
    u32 slot;
    u32 pad;
};

struct calls_key {
    u32 tgid;
    u32 syscall;
    u32 detail;
    u32 pad;
    u64 target;
};

struct calls {
    u64 calls;
    u64 errors;
    u64 total_ns;
    u64 length_bytes;   /* the length argument of the calls that succeeded */
};

struct mapping_key {
    u32 tgid;
    u32 pad;
    u64 address;
};

struct mapping {
    u64 length;
    s64 fd;
};

#include "scope.h"
#include "lost.h"

BPF_TABLE("lru_hash", u32, struct inflight, mqi_inflight, MAX_THREADS);
BPF_F_TABLE("hash", struct latency_key, u64, mqi_latency, MAX_LATENCY_SLOTS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct calls_key, struct calls, mqi_calls, MAX_RECORDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct mapping_key, struct mapping, mqi_mappings, MAX_MAPPINGS, BPF_F_NO_PREALLOC);
/* A traced call begins: keep what it aims at and when it started, until it returns. */
static __always_inline int on_enter(u32 syscall, int syscall_nr, u64 target, u64 length, u32 detail)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct inflight call = {.target = target, .length = length, .syscall = syscall, .detail = detail,
                            .syscall_nr = syscall_nr};
    call.started_ns = bpf_ktime_get_ns();  /* last, so the setup above is not timed */
    mqi_inflight.update(&tid, &call);
    return 0;
}

/* A descriptor as a target: sign-extended, so that mmap's -1 (anonymous) stays -1 */
static __always_inline u64 fd_target(long fd)
{
    return (u64)(s64)(s32)fd;
}

int mqi_mmap_e(struct tracepoint__syscalls__sys_enter_mmap *args)
{
    return on_enter(SYSCALL_MMAP, args->__syscall_nr, fd_target(args->fd), args->len,
                    args->flags & MMAP_FLAGS_SHOWN);
}

int mqi_munmap_e(struct tracepoint__syscalls__sys_enter_munmap *args)
{
    return on_enter(SYSCALL_MUNMAP, args->__syscall_nr, args->addr, args->len, 0);
}

int mqi_madvise_e(struct tracepoint__syscalls__sys_enter_madvise *args)
{
    return on_enter(SYSCALL_MADVISE, args->__syscall_nr, args->start, args->len_in, args->behavior);
}

int mqi_mlock_e(struct tracepoint__syscalls__sys_enter_mlock *args)
{
    return on_enter(SYSCALL_MLOCK, args->__syscall_nr, args->start, args->len, 0);
}

int mqi_mlock2_e(struct tracepoint__syscalls__sys_enter_mlock2 *args)
{
    return on_enter(SYSCALL_MLOCK2, args->__syscall_nr, args->start, args->len, args->flags);
}

int mqi_munlock_e(struct tracepoint__syscalls__sys_enter_munlock *args)
{
    return on_enter(SYSCALL_MUNLOCK, args->__syscall_nr, args->start, args->len, 0);
}

int mqi_msync_e(struct tracepoint__syscalls__sys_enter_msync *args)
{
    return on_enter(SYSCALL_MSYNC, args->__syscall_nr, args->start, args->len, args->flags);
}

int mqi_fadvise_e(struct tracepoint__syscalls__sys_enter_fadvise64 *args)
{
    return on_enter(SYSCALL_FADVISE64, args->__syscall_nr, fd_target(args->fd), args->len, args->advice);
}

int mqi_mincore_e(struct tracepoint__syscalls__sys_enter_mincore *args)
{
    return on_enter(SYSCALL_MINCORE, args->__syscall_nr, args->start, args->len, 0);
}

int mqi_fsync_e(struct tracepoint__syscalls__sys_enter_fsync *args)
{
    return on_enter(SYSCALL_FSYNC, args->__syscall_nr, fd_target(args->fd), 0, 0);
}

int mqi_fdatasync_e(struct tracepoint__syscalls__sys_enter_fdatasync *args)
{
    return on_enter(SYSCALL_FDATASYNC, args->__syscall_nr, fd_target(args->fd), 0, 0);
}

static __always_inline void count_latency(u32 tgid, u32 syscall, u64 elapsed_ns)
{
    u32 slot = bpf_log2l(elapsed_ns);
    if (slot > LAST_SLOT)
        slot = LAST_SLOT;
    struct latency_key key = {.tgid = tgid, .syscall = syscall, .slot = slot};
    u64 zero = 0;
    u64 *calls = mqi_latency.lookup_or_try_init(&key, &zero);
    if (calls)
        __sync_fetch_and_add(calls, 1);
    else
        count_lost();
}

static __always_inline void count_call(u32 tgid, struct inflight *call, u64 elapsed_ns, long ret)
{
    struct calls_key key = {.tgid = tgid, .syscall = call->syscall, .detail = call->detail,
                            .target = call->target};
    struct calls zero = {};
    struct calls *calls = mqi_calls.lookup_or_try_init(&key, &zero);
    if (!calls) {
        count_lost();
        return;
    }
    __sync_fetch_and_add(&calls->calls, 1);
    __sync_fetch_and_add(&calls->total_ns, elapsed_ns);
    if (ret < 0)
        __sync_fetch_and_add(&calls->errors, 1);
    else
        __sync_fetch_and_add(&calls->length_bytes, call->length);
}

static __always_inline void record_mapping(u32 tgid, struct inflight *call, long address)
{
    struct mapping_key key = {.tgid = tgid, .address = address};
    struct mapping mapping = {.length = call->length, .fd = (s64)call->target};
    if (mqi_mappings.update(&key, &mapping) != 0)
        count_lost();
}

/* Any traced call returns: time it. Attached to all 11 sys_exit tracepoints. */
int mqi_sys_exit(struct tracepoint__syscalls__sys_exit_mmap *args)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    struct inflight *call = mqi_inflight.lookup(&tid);
    if (!call)
        return 0;  /* untraced process, or a call that began before we attached */
    if (call->syscall_nr == args->__syscall_nr) {
        u64 elapsed_ns = now - call->started_ns;
        count_latency(tgid, call->syscall, elapsed_ns);
        count_call(tgid, call, elapsed_ns, args->ret);
        if (call->syscall == SYSCALL_MMAP && args->ret >= 0)
            record_mapping(tgid, call, args->ret);
    }
    mqi_inflight.delete(&tid);
    return 0;
}
