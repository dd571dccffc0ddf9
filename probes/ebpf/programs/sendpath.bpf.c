/*
 * sendpath.bpf.c - what the traced processes move through read-, write-, send- and splice-like syscalls,
 * per process, syscall and file descriptor: calls, errors and bytes, and the faults taken inside them.
 *
 * Loaded by probes/ebpf/sendpath.py through bcc. Every parameter arrives as an integer -D define (below);
 * the set of processes to trace arrives as entries of a hash map. Nothing else varies. Tracepoint fields are
 * read by name (args->field: bcc builds each struct from the event's format file).
 *
 * The bytes and their direction come from the syscalls, not from the socket layer, because the syscall says
 * who copies: read-like calls copy into the caller's memory, write-like calls copy out of it, sendfile and
 * splice move page references inside the kernel. Which descriptor is a file, a socket or a pipe is worked
 * out in user space (/proc/PID/fd), so this program only keeps the descriptor numbers.
 *
 * Tracepoints, and why each one:
 *   syscalls:sys_enter_{read,pread64,readv,write,pwrite64,writev,sendfile64,splice,vmsplice,sendmsg,
 *                       sendto,recvfrom,recvmsg}
 *                                 the descriptor(s) of the call: only the entry has the arguments. Kept per
 *                                 thread (mqi_inflight) until the call returns.
 *   syscalls:sys_exit_*  (the same 13)
 *                                 the return value: bytes moved, or a negative errno. One function serves all
 *                                 13 exits: their records are identical (__syscall_nr, ret), and the entry
 *                                 kept for the thread says which call it was.
 *   exceptions:page_fault_kernel  (optional) page faults the kernel takes on user addresses while a traced
 *                                 call copies to or from user memory: with mmap+write, the first touch of a
 *                                 mapped file page happens inside write()/send(). Counted per call record.
 *                                 User-mode faults (the process touching its mappings itself) are left to
 *                                 `mqinspect trace faults`.
 *   sock:sock_send_length         (optional) bytes a socket accepted per send, whatever the syscall (write,
 *                                 send*, and sendfile/splice, which reach the socket through sock_sendmsg):
 *                                 the socket-side total to hold the syscall-side bytes against. Its flags
 *                                 field is 0 for sends, so it cannot tell spliced pages from copied bytes.
 *   skb:skb_copy_datagram_iovec   (optional) bytes copied out of socket buffers into user memory on receive
 *                                 (recv*, read on a socket; also netlink): the consumer-side copy.
 *   tcp:tcp_sendmsg_locked        (optional) one event per pass of tcp_sendmsg_locked()'s loop, each pass
 *                                 appending up to size_goal bytes to an skb. Its fields (skb_len, msg_left,
 *                                 size_goal) describe the pass, not the bytes copied, so only passes are
 *                                 counted: bytes accepted per pass shows how the stream was cut into skbs.
 *
 * Maps (tgid = process id, tid = thread id):
 *   mqi_tgids        set of tgids to trace, filled from user space (used when FILTER_TGIDS is 1)
 *   mqi_inflight     per thread: the traced call in progress (LRU: threads that exit mid-call age out)
 *   mqi_traffic      per (tgid, syscall, fd, source fd): calls, errors, bytes, faults. Cumulative, never
 *                    drained: user space takes differences, so nothing is lost between reads.
 *   mqi_sockets      per tgid: socket-side bytes sent, bytes copied to user, tcp_sendmsg passes (cumulative)
 *   mqi_lost         [0]: events whose record did not fit mqi_traffic or mqi_sockets (cumulative)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS                1 to trace only mqi_tgids, 0 for every process
 *   IGNORE_TGID                 the tracer itself, left out when every process is traced
 *   MAX_TGIDS, MAX_THREADS, MAX_RECORDS   map sizes
 *   NO_FD                       the source fd of calls that have only one descriptor
 *   SYSCALL_READ ... SYSCALL_RECVMSG      the id of each syscall in mqi_traffic keys (user space names them)
 */

struct inflight {
    s32 fd;             /* where the bytes go to or come from; the destination for sendfile and splice */
    s32 source_fd;      /* sendfile and splice: where the bytes come from; NO_FD otherwise */
    u32 syscall;        /* SYSCALL_* */
    s32 syscall_nr;     /* the kernel's number, checked at exit against a stale entry of a reused tid */
};

struct traffic_key {
    u32 tgid;
    u32 syscall;
    s32 fd;
    s32 source_fd;
};

struct traffic {
    u64 calls;
    u64 errors;
    u64 bytes;          /* sum of the positive return values */
    u64 faults;         /* kernel-mode page faults on user addresses during these calls */
};

struct socket_totals {
    u64 sent_bytes;             /* sock_send_length */
    u64 copied_to_user_bytes;   /* skb_copy_datagram_iovec */
    u64 tcp_sendmsg_passes;     /* tcp_sendmsg_locked */
};

BPF_HASH(mqi_tgids, u32, u8, MAX_TGIDS);
BPF_TABLE("lru_hash", u32, struct inflight, mqi_inflight, MAX_THREADS);
BPF_F_TABLE("hash", struct traffic_key, struct traffic, mqi_traffic, MAX_RECORDS, BPF_F_NO_PREALLOC);
BPF_HASH(mqi_sockets, u32, struct socket_totals, MAX_TGIDS);
BPF_ARRAY(mqi_lost, u64, 1);

static __always_inline int tgid_traced(u32 tgid)
{
#if FILTER_TGIDS
    return mqi_tgids.lookup(&tgid) != NULL;
#else
    return tgid != 0 && tgid != IGNORE_TGID;  /* the tracer's own reads of /proc are noise */
#endif
}

static __always_inline void count_lost(void)
{
    int first = 0;
    u64 *lost = mqi_lost.lookup(&first);
    if (lost)
        __sync_fetch_and_add(lost, 1);
}

static __always_inline struct traffic *traffic_of(u32 tgid, struct inflight *call)
{
    struct traffic_key key = {.tgid = tgid, .syscall = call->syscall, .fd = call->fd,
                              .source_fd = call->source_fd};
    struct traffic zero = {};
    struct traffic *traffic = mqi_traffic.lookup_or_try_init(&key, &zero);
    if (!traffic)
        count_lost();
    return traffic;
}

static __always_inline struct socket_totals *socket_totals_of(u32 tgid)
{
    struct socket_totals zero = {};
    struct socket_totals *totals = mqi_sockets.lookup_or_try_init(&tgid, &zero);
    if (!totals)
        count_lost();
    return totals;
}

/* A traced call begins: keep its descriptors until it returns. */
static __always_inline int on_enter(u32 syscall, int syscall_nr, s32 fd, s32 source_fd)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct inflight call = {.fd = fd, .source_fd = source_fd, .syscall = syscall, .syscall_nr = syscall_nr};
    mqi_inflight.update(&tid, &call);
    return 0;
}

int mqi_read_e(struct tracepoint__syscalls__sys_enter_read *args)
{
    return on_enter(SYSCALL_READ, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_pread_e(struct tracepoint__syscalls__sys_enter_pread64 *args)
{
    return on_enter(SYSCALL_PREAD64, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_readv_e(struct tracepoint__syscalls__sys_enter_readv *args)
{
    return on_enter(SYSCALL_READV, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_write_e(struct tracepoint__syscalls__sys_enter_write *args)
{
    return on_enter(SYSCALL_WRITE, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_pwrite_e(struct tracepoint__syscalls__sys_enter_pwrite64 *args)
{
    return on_enter(SYSCALL_PWRITE64, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_writev_e(struct tracepoint__syscalls__sys_enter_writev *args)
{
    return on_enter(SYSCALL_WRITEV, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_sendfile_e(struct tracepoint__syscalls__sys_enter_sendfile64 *args)
{
    return on_enter(SYSCALL_SENDFILE64, args->__syscall_nr, args->out_fd, args->in_fd);
}

int mqi_splice_e(struct tracepoint__syscalls__sys_enter_splice *args)
{
    return on_enter(SYSCALL_SPLICE, args->__syscall_nr, args->fd_out, args->fd_in);
}

int mqi_vmsplice_e(struct tracepoint__syscalls__sys_enter_vmsplice *args)
{
    return on_enter(SYSCALL_VMSPLICE, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_sendmsg_e(struct tracepoint__syscalls__sys_enter_sendmsg *args)
{
    return on_enter(SYSCALL_SENDMSG, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_sendto_e(struct tracepoint__syscalls__sys_enter_sendto *args)
{
    return on_enter(SYSCALL_SENDTO, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_recvfrom_e(struct tracepoint__syscalls__sys_enter_recvfrom *args)
{
    return on_enter(SYSCALL_RECVFROM, args->__syscall_nr, args->fd, NO_FD);
}

int mqi_recvmsg_e(struct tracepoint__syscalls__sys_enter_recvmsg *args)
{
    return on_enter(SYSCALL_RECVMSG, args->__syscall_nr, args->fd, NO_FD);
}

/* Any traced call returns: add it to its record. Attached to all 13 sys_exit tracepoints. */
int mqi_sys_exit(struct tracepoint__syscalls__sys_exit_read *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    struct inflight *call = mqi_inflight.lookup(&tid);
    if (!call)
        return 0;  /* untraced process, or a call that began before we attached */
    if (call->syscall_nr == args->__syscall_nr) {
        struct traffic *traffic = traffic_of(tgid, call);
        if (traffic) {
            long ret = args->ret;
            __sync_fetch_and_add(&traffic->calls, 1);
            if (ret < 0)
                __sync_fetch_and_add(&traffic->errors, 1);
            else
                __sync_fetch_and_add(&traffic->bytes, ret);
        }
    }
    mqi_inflight.delete(&tid);
    return 0;
}

int mqi_copy_fault(struct tracepoint__exceptions__page_fault_kernel *args)
{
    if (args->address >> 63)  /* a kernel address: not a copy to or from the process's memory */
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    struct inflight *call = mqi_inflight.lookup(&tid);
    if (!call)
        return 0;
    struct traffic *traffic = traffic_of(tgid, call);
    if (traffic)
        __sync_fetch_and_add(&traffic->faults, 1);
    return 0;
}

int mqi_sock_send(struct tracepoint__sock__sock_send_length *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    int sent = args->ret;
    if (sent <= 0 || !tgid_traced(tgid))
        return 0;
    struct socket_totals *totals = socket_totals_of(tgid);
    if (totals)
        __sync_fetch_and_add(&totals->sent_bytes, sent);
    return 0;
}

int mqi_skb_copy(struct tracepoint__skb__skb_copy_datagram_iovec *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    int copied = args->len;
    if (copied <= 0 || !tgid_traced(tgid))
        return 0;
    struct socket_totals *totals = socket_totals_of(tgid);
    if (totals)
        __sync_fetch_and_add(&totals->copied_to_user_bytes, copied);
    return 0;
}

int mqi_tcp_send(struct tracepoint__tcp__tcp_sendmsg_locked *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!tgid_traced(tgid))
        return 0;
    struct socket_totals *totals = socket_totals_of(tgid);
    if (totals)
        __sync_fetch_and_add(&totals->tcp_sendmsg_passes, 1);
    return 0;
}
