/*
 * sendpath.bpf.c - what the traced processes move through read-, write-, send- and splice-like syscalls,
 * per process, syscall and file descriptor: calls, errors and bytes, the faults taken inside them, and,
 * for calls that copy out of user memory, where in the process's memory the bytes came from.
 *
 * Loaded by probes/ebpf/sendpath.py through bcc. Every parameter arrives as an integer -D define (below);
 * the set of processes to trace arrives as entries of a hash map. Nothing else varies. Tracepoint fields are
 * read by name (args->field: bcc builds each struct from the event's format file). No kernel struct is read:
 * the only memory read besides the tracepoints' fields is the caller's own (its iovec arrays and msghdr,
 * whose layout is the user ABI), with bpf_probe_read_user.
 *
 * The bytes and their direction come from the syscalls, not from the socket layer, because the syscall says
 * who copies: read-like calls copy into the caller's memory, write-like calls copy out of it, sendfile and
 * splice move page references inside the kernel. Which descriptor is a file, a socket or a pipe is worked
 * out in user space (/proc/PID/fd), so this program only keeps the descriptor numbers.
 *
 * Which file a call read pages of: filemap:mm_filemap_get_pages fires in the page-cache read path
 * (filemap_read for read/pread/readv, filemap_splice_read for sendfile/splice) with the file's device and
 * inode, in the calling thread, during the call. The call's record carries that (dev, ino), so the file is
 * known as the kernel saw it at the time, whatever the descriptor refers to by the time user space looks
 * (closed, reused for a pipe, the process gone). Reads that bypass the page cache (O_DIRECT, tmpfs, sockets,
 * pipes) leave it 0: user space then names the descriptor.
 *
 * Where the bytes of a write-like call came from (the evidence for a send path), per user buffer:
 *   ORIGIN_READ      the buffer starts inside the range the same thread's last successful read-like call
 *                    filled (read, pread64, recvfrom: their buffer; readv, recvmsg: their first iovec):
 *                    the record's source_fd is that call's descriptor, and dev/ino the file it read pages
 *                    of. Read from a file, then written: read+write.
 *   ORIGIN_ADDRESS   otherwise: the record is keyed by the group of GROUP_PAGES pages holding the buffer's
 *                    first byte, with the bytes per page of the group; user space places each page in
 *                    /proc/PID/maps (a mapping of a file: mmap+write; anything else: other writes).
 *   ORIGIN_UNSEEN    bytes of writev/sendmsg iovecs past the first MAX_IOVECS, or whose iovec could not be
 *                    read: not placed.
 *   ORIGIN_NONE      calls without a buffer to place: read-like calls, sendfile, splice, vmsplice, and
 *                    calls that moved no byte (errors, empty writes).
 *
 * Tracepoints, and why each one:
 *   syscalls:sys_enter_{read,pread64,readv,write,pwrite64,writev,sendfile64,splice,vmsplice,sendmsg,
 *                       sendto,recvfrom,recvmsg}
 *                                 the descriptor(s) and buffer of the call: only the entry has the
 *                                 arguments. Kept in the thread's state (mqi_threads) until the call returns.
 *   syscalls:sys_exit_*  (the same 13)
 *                                 the return value: bytes moved, or a negative errno. One function serves all
 *                                 13 exits: their records are identical (__syscall_nr, ret), and the state
 *                                 kept for the thread says which call it was.
 *   filemap:mm_filemap_get_pages  (optional) the file whose page-cache pages a traced call reads (above),
 *                                 and how far: last_index + 1 is kept as the call's end page, the position
 *                                 in the file a sendfile, splice or read reached (a consumer's read position).
 *   filemap:mm_filemap_add_to_page_cache  (optional) a folio added to the page cache by the thread of a
 *                                 traced call during the call: pages the call had to read from disk (cold
 *                                 pages), and the readahead it started. Counted per call, like faults.
 *   exceptions:page_fault_kernel  (optional) page faults the kernel takes on user addresses while a traced
 *                                 call copies to or from user memory: with mmap+write, the first touch of a
 *                                 mapped file page happens inside write()/send(). Counted per call.
 *                                 User-mode faults (the process touching its mappings itself) are left to
 *                                 `mqinspect trace faults`.
 *   sock:sock_send_length         (optional) bytes a socket accepted per send, whatever the syscall (write,
 *                                 send*, and sendfile/splice, which reach the socket through sock_sendmsg):
 *                                 the socket-side total to hold the syscall-side bytes against. Its flags
 *                                 field is 0 for sends, so it cannot tell spliced pages from copied bytes.
 *                                 It also marks the traced call in progress as delivering to a socket
 *                                 (to_socket in its records): the destination as the kernel saw it, even
 *                                 when the descriptor is closed or reused before user space reads it.
 *   skb:skb_copy_datagram_iovec   (optional) bytes copied out of socket buffers into user memory on receive
 *                                 (recv*, read on a socket; also netlink): the consumer-side copy.
 *   tcp:tcp_sendmsg_locked        (optional) one event per pass of tcp_sendmsg_locked()'s loop, each pass
 *                                 appending up to size_goal bytes to an skb. Its fields (skb_len, msg_left,
 *                                 size_goal) describe the pass, not the bytes copied, so only passes are
 *                                 counted: bytes accepted per pass shows how the stream was cut into skbs.
 *
 * Maps (tgid = process id, tid = thread id):
 *   mqi_tgids        the tgids to trace (scope.h: tgid_traced() asks it when FILTER_TGIDS is 1)
 *   mqi_threads      per thread: the traced call in progress (its arguments, and the faults taken in it),
 *                    and what its last read-like call filled. Updated in place; LRU: threads that exit age
 *                    out.
 *   mqi_traffic      per (tgid, syscall, fd, source fd, origin, file read, page group): calls, errors, bytes,
 *                    faults, pages added to the page cache, the end page the latest call read (not summed:
 *                    the last value), and for ORIGIN_ADDRESS the bytes per page of the group. Cumulative, updated in
 *                    place: user space takes differences, and removes only the records of processes that
 *                    exited and records that stopped moving (page groups of mappings no longer sent from).
 *   mqi_zero         [0]: a zeroed traffic value, the initial value of a new mqi_traffic record (too large
 *                    for the stack beside the rest)
 *   mqi_sockets      per tgid: socket-side bytes sent, bytes copied to user, tcp_sendmsg passes (cumulative)
 *   mqi_lost         [0]: events whose record did not fit mqi_traffic or mqi_sockets (lost.h)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS                1 to trace only mqi_tgids, 0 for every process
 *   IGNORE_TGID                 the tracer itself, left out when every process is traced
 *   MAX_TGIDS, MAX_THREADS, MAX_RECORDS   map sizes
 *   NO_FD                       the source fd of records that have none
 *   ORIGIN_NONE ... ORIGIN_UNSEEN        where a record's bytes came from (above)
 *   PAGE_SHIFT, GROUP_SHIFT     log2 of the page size and of GROUP_PAGES, the pages one ORIGIN_ADDRESS
 *                               record covers
 *   MAX_IOVECS                  the iovecs of one writev/sendmsg that are placed one by one
 *   SYSCALL_READ ... SYSCALL_RECVMSG      the id of each syscall in mqi_traffic keys (user space names them)
 */

#define GROUP_PAGES (1 << GROUP_SHIFT)

struct thread_state {
    u64 buffer;         /* the call's buffer; readv/writev: its iovec array; sendmsg/recvmsg: its msghdr */
    u64 read_start;     /* [read_start, read_end): what the thread's last read-like call filled */
    u64 read_end;
    u32 tgid;           /* whose thread this is (a reused tid starts afresh) */
    u32 syscall;        /* SYSCALL_* of the call in progress */
    s32 syscall_nr;     /* the kernel's number, checked at exit against a stale call */
    s32 fd;             /* where the bytes go to or come from; the destination for sendfile and splice */
    s32 source_fd;      /* sendfile and splice: where the bytes come from; NO_FD otherwise */
    s32 read_fd;        /* the descriptor of the last read-like call */
    u32 vectors;        /* readv/writev: the iovec count */
    u32 faults;         /* kernel-mode faults on user addresses during the call */
    u32 in_call;        /* 1 from a traced call's entry to its exit */
    u32 call_dev;       /* the file whose pages the call in progress read (mm_filemap_get_pages); 0: none */
    u64 call_ino;
    u64 read_ino;       /* ... and the file the last read-like call read */
    u32 read_dev;
    u32 to_socket;      /* 1 once a socket accepted bytes of the call in progress (sock_send_length) */
    u32 added_pages;    /* pages the thread added to the page cache during the call */
    u32 read_added_pages;   /* ... during its last read-like call, until a write from its buffer counts them */
    u64 call_end_page;  /* one past the last page of the file the call read (mm_filemap_get_pages); 0: none */
    u64 read_end_page;  /* ... that the last read-like call read */
};

struct traffic_key {
    u32 tgid;
    u32 syscall;
    s32 fd;
    s32 source_fd;      /* sendfile/splice: the source; ORIGIN_READ: the read's descriptor; else NO_FD */
    u32 origin;         /* ORIGIN_* */
    u32 dev;            /* the file read: by the call (ORIGIN_NONE), by the last read (ORIGIN_READ); 0: none */
    u64 ino;
    u64 group;          /* ORIGIN_ADDRESS: user address >> (PAGE_SHIFT + GROUP_SHIFT); else 0 */
    u32 to_socket;      /* 1: the call delivered bytes to a socket, as the socket layer said at the time */
    u32 pad;
};

struct traffic {
    u64 calls;
    u64 errors;
    u64 bytes;          /* sum of the positive return values (for iovecs: this record's share) */
    u64 faults;         /* kernel-mode page faults on user addresses during these calls */
    u64 added_pages;    /* pages their thread added to the page cache during these calls (or their read) */
    u64 end_page;       /* one past the last page of the source file the latest call read; 0: unknown */
    u64 page_bytes[GROUP_PAGES];    /* ORIGIN_ADDRESS: bytes of buffers starting in each page */
};

struct socket_totals {
    u64 sent_bytes;             /* sock_send_length */
    u64 copied_to_user_bytes;   /* skb_copy_datagram_iovec */
    u64 tcp_sendmsg_passes;     /* tcp_sendmsg_locked */
};

/* The user ABI's struct iovec and the fields of struct user_msghdr this program reads (x86_64). */
struct user_iovec {
    u64 base;
    u64 len;
};

#define MSGHDR_IOV_OFFSET 16
#define MSGHDR_IOVLEN_OFFSET 24

#include "scope.h"
#include "lost.h"

BPF_TABLE("lru_hash", u32, struct thread_state, mqi_threads, MAX_THREADS);
BPF_F_TABLE("hash", struct traffic_key, struct traffic, mqi_traffic, MAX_RECORDS, BPF_F_NO_PREALLOC);
BPF_ARRAY(mqi_zero, struct traffic, 1);
BPF_HASH(mqi_sockets, u32, struct socket_totals, MAX_TGIDS);
static __always_inline struct socket_totals *socket_totals_of(u32 tgid)
{
    struct socket_totals zero = {};
    struct socket_totals *totals = mqi_sockets.lookup_or_try_init(&tgid, &zero);
    if (!totals)
        count_lost();
    return totals;
}

/* A traced call begins: keep its arguments in the thread's state, in place, until it returns. */
static __always_inline int on_enter(u32 syscall, int syscall_nr, s32 fd, s32 source_fd, u64 buffer,
                                    u64 vectors)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (!state || state->tgid != tgid) {
        struct thread_state fresh = {.tgid = tgid, .read_fd = NO_FD};
        mqi_threads.update(&tid, &fresh);
        state = mqi_threads.lookup(&tid);
        if (!state)
            return 0;
    }
    state->buffer = buffer;
    state->syscall = syscall;
    state->syscall_nr = syscall_nr;
    state->fd = fd;
    state->source_fd = source_fd;
    state->vectors = vectors > MAX_IOVECS ? MAX_IOVECS + 1 : (u32)vectors;
    state->faults = 0;
    state->call_dev = 0;
    state->call_ino = 0;
    state->to_socket = 0;
    state->added_pages = 0;
    state->call_end_page = 0;
    state->in_call = 1;
    return 0;
}

int mqi_read_e(struct tracepoint__syscalls__sys_enter_read *args)
{
    return on_enter(SYSCALL_READ, args->__syscall_nr, args->fd, NO_FD, (u64)args->buf, 0);
}

int mqi_pread_e(struct tracepoint__syscalls__sys_enter_pread64 *args)
{
    return on_enter(SYSCALL_PREAD64, args->__syscall_nr, args->fd, NO_FD, (u64)args->buf, 0);
}

int mqi_readv_e(struct tracepoint__syscalls__sys_enter_readv *args)
{
    return on_enter(SYSCALL_READV, args->__syscall_nr, args->fd, NO_FD, (u64)args->vec, args->vlen);
}

int mqi_write_e(struct tracepoint__syscalls__sys_enter_write *args)
{
    return on_enter(SYSCALL_WRITE, args->__syscall_nr, args->fd, NO_FD, (u64)args->buf, 0);
}

int mqi_pwrite_e(struct tracepoint__syscalls__sys_enter_pwrite64 *args)
{
    return on_enter(SYSCALL_PWRITE64, args->__syscall_nr, args->fd, NO_FD, (u64)args->buf, 0);
}

int mqi_writev_e(struct tracepoint__syscalls__sys_enter_writev *args)
{
    return on_enter(SYSCALL_WRITEV, args->__syscall_nr, args->fd, NO_FD, (u64)args->vec, args->vlen);
}

int mqi_sendfile_e(struct tracepoint__syscalls__sys_enter_sendfile64 *args)
{
    return on_enter(SYSCALL_SENDFILE64, args->__syscall_nr, args->out_fd, args->in_fd, 0, 0);
}

int mqi_splice_e(struct tracepoint__syscalls__sys_enter_splice *args)
{
    return on_enter(SYSCALL_SPLICE, args->__syscall_nr, args->fd_out, args->fd_in, 0, 0);
}

int mqi_vmsplice_e(struct tracepoint__syscalls__sys_enter_vmsplice *args)
{
    return on_enter(SYSCALL_VMSPLICE, args->__syscall_nr, args->fd, NO_FD, 0, 0);
}

int mqi_sendmsg_e(struct tracepoint__syscalls__sys_enter_sendmsg *args)
{
    return on_enter(SYSCALL_SENDMSG, args->__syscall_nr, args->fd, NO_FD, (u64)args->msg, 0);
}

int mqi_sendto_e(struct tracepoint__syscalls__sys_enter_sendto *args)
{
    return on_enter(SYSCALL_SENDTO, args->__syscall_nr, args->fd, NO_FD, (u64)args->buff, 0);
}

int mqi_recvfrom_e(struct tracepoint__syscalls__sys_enter_recvfrom *args)
{
    return on_enter(SYSCALL_RECVFROM, args->__syscall_nr, args->fd, NO_FD, (u64)args->ubuf, 0);
}

int mqi_recvmsg_e(struct tracepoint__syscalls__sys_enter_recvmsg *args)
{
    return on_enter(SYSCALL_RECVMSG, args->__syscall_nr, args->fd, NO_FD, (u64)args->msg, 0);
}

/* Add `moved` bytes (and, for the call's `first` record, the call itself) to the record of `origin`. */
static __always_inline void add_to_record(struct thread_state *state, long ret, u32 origin, s32 source_fd,
                                          u64 address, u64 moved, int first)
{
    struct traffic_key key = {.tgid = state->tgid, .syscall = state->syscall, .fd = state->fd,
                              .source_fd = source_fd, .origin = origin, .to_socket = state->to_socket};
    if (origin == ORIGIN_ADDRESS) {
        key.group = address >> (PAGE_SHIFT + GROUP_SHIFT);
    } else if (origin == ORIGIN_READ) {
        key.dev = state->read_dev;
        key.ino = state->read_ino;
    } else if (origin == ORIGIN_NONE) {
        key.dev = state->call_dev;
        key.ino = state->call_ino;
    }
    struct traffic *traffic = mqi_traffic.lookup(&key);
    if (!traffic) {
        int zero_index = 0;
        struct traffic *zero = mqi_zero.lookup(&zero_index);
        if (zero)
            mqi_traffic.insert(&key, zero);  /* BPF_NOEXIST: another CPU's new record is not reset */
        traffic = mqi_traffic.lookup(&key);
        if (!traffic) {
            count_lost();
            return;
        }
    }
    if (first) {
        __sync_fetch_and_add(&traffic->calls, 1);
        if (ret < 0)
            __sync_fetch_and_add(&traffic->errors, 1);
        if (state->faults)
            __sync_fetch_and_add(&traffic->faults, state->faults);
        u64 added = state->added_pages;
        if (origin == ORIGIN_READ) {  /* the read that filled the buffer brought them in: counted once */
            added += state->read_added_pages;
            state->read_added_pages = 0;
        }
        if (added)
            __sync_fetch_and_add(&traffic->added_pages, added);
    }
    u64 end_page = 0;
    if (origin == ORIGIN_READ)
        end_page = state->read_end_page;
    else if (origin == ORIGIN_NONE)
        end_page = state->call_end_page;
    if (end_page)
        traffic->end_page = end_page;  /* the latest call's, not summed */
    if (moved) {
        __sync_fetch_and_add(&traffic->bytes, moved);
        if (origin == ORIGIN_ADDRESS) {
            u32 page = (address >> PAGE_SHIFT) & (GROUP_PAGES - 1);
            __sync_fetch_and_add(&traffic->page_bytes[page], moved);
        }
    }
}

/* `moved` bytes written from the user buffer at `address`: from the last read's range, or placed. */
static __always_inline void add_buffer(struct thread_state *state, long ret, u64 address, u64 moved,
                                       int first)
{
    if (address - state->read_start < state->read_end - state->read_start)
        add_to_record(state, ret, ORIGIN_READ, state->read_fd, 0, moved, first);
    else
        add_to_record(state, ret, ORIGIN_ADDRESS, NO_FD, address, moved, first);
}

/* A writev/sendmsg that wrote `ret` > 0 bytes: each of the first MAX_IOVECS iovecs placed on its own, in
 * order (the kernel consumes them in order), the rest unseen. */
static __always_inline void add_vectors(struct thread_state *state, long ret, u64 vector, u64 count)
{
    u64 left = ret;
    int first = 1;
    for (int i = 0; i < MAX_IOVECS; i++) {
        if (i >= count || left == 0)
            break;
        struct user_iovec iov = {};
        if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(vector + i * sizeof(iov))) != 0)
            break;
        u64 part = iov.len < left ? iov.len : left;
        if (part) {
            add_buffer(state, ret, iov.base, part, first);
            first = 0;
            left -= part;
        }
    }
    if (left || first)
        add_to_record(state, ret, ORIGIN_UNSEEN, NO_FD, 0, left, first);
}

/* The iovec array and count of a sendmsg/recvmsg's msghdr (user memory); 0, 0 when unreadable. */
static __always_inline void msghdr_vectors(u64 msghdr, u64 *vector, u64 *count)
{
    if (bpf_probe_read_user(vector, sizeof(*vector), (void *)(msghdr + MSGHDR_IOV_OFFSET)) != 0 ||
        bpf_probe_read_user(count, sizeof(*count), (void *)(msghdr + MSGHDR_IOVLEN_OFFSET)) != 0) {
        *vector = 0;
        *count = 0;
    }
}

/* A read-like call filled `filled` bytes: remember where, for the writes that follow. */
static __always_inline void remember_read(struct thread_state *state, long filled)
{
    u64 start = state->buffer;
    if (state->syscall == SYSCALL_READV || state->syscall == SYSCALL_RECVMSG) {
        u64 vector = start, count = 1;
        if (state->syscall == SYSCALL_RECVMSG)
            msghdr_vectors(start, &vector, &count);
        struct user_iovec first = {};
        if (count == 0 || bpf_probe_read_user(&first, sizeof(first), (void *)vector) != 0)
            return;
        start = first.base;
        if (first.len < filled)
            filled = first.len;
    }
    state->read_start = start;
    state->read_end = start + filled;
    state->read_fd = state->fd;
    state->read_dev = state->call_dev;
    state->read_ino = state->call_ino;
    state->read_end_page = state->call_end_page;
    state->read_added_pages = state->added_pages;
}

/* Any traced call returns: add it to its records. Attached to all 13 sys_exit tracepoints. */
int mqi_sys_exit(struct tracepoint__syscalls__sys_exit_read *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (!state || !state->in_call)
        return 0;  /* untraced process, or a call that began before we attached */
    state->in_call = 0;
    if (state->syscall_nr != args->__syscall_nr || state->tgid != tgid)
        return 0;  /* the state of a thread that ended mid-call, whose tid was reused */
    long ret = args->ret;
    u32 syscall = state->syscall;
    if (ret <= 0) {
        add_to_record(state, ret, ORIGIN_NONE, state->source_fd, 0, 0, 1);
    } else if (syscall == SYSCALL_WRITE || syscall == SYSCALL_PWRITE64 || syscall == SYSCALL_SENDTO) {
        add_buffer(state, ret, state->buffer, ret, 1);
    } else if (syscall == SYSCALL_WRITEV) {
        add_vectors(state, ret, state->buffer, state->vectors);
    } else if (syscall == SYSCALL_SENDMSG) {
        u64 vector, count;
        msghdr_vectors(state->buffer, &vector, &count);
        add_vectors(state, ret, vector, count);
    } else {
        add_to_record(state, ret, ORIGIN_NONE, state->source_fd, 0, ret, 1);
        if (syscall == SYSCALL_READ || syscall == SYSCALL_PREAD64 || syscall == SYSCALL_READV ||
            syscall == SYSCALL_RECVFROM || syscall == SYSCALL_RECVMSG)
            remember_read(state, ret);
    }
    return 0;
}

/* A traced call reads a file's pages: remember which file. Any other thread has no state in progress, so
 * the per-thread lookup is the filter. */
int mqi_get_pages(struct tracepoint__filemap__mm_filemap_get_pages *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (state && state->in_call) {
        state->call_dev = args->s_dev;
        state->call_ino = args->i_ino;
        state->call_end_page = args->last_index + 1;
    }
    return 0;
}

/* A traced call's thread adds pages to the page cache: the call reads them from disk. */
int mqi_page_added(struct tracepoint__filemap__mm_filemap_add_to_page_cache *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (state && state->in_call)
        state->added_pages += 1 << args->order;
    return 0;
}

int mqi_copy_fault(struct tracepoint__exceptions__page_fault_kernel *args)
{
    if (args->address >> 63)  /* a kernel address: not a copy to or from the process's memory */
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (state && state->in_call)
        state->faults++;
    return 0;
}

int mqi_sock_send(struct tracepoint__sock__sock_send_length *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    int sent = args->ret;
    if (sent <= 0 || !tgid_traced(tgid))
        return 0;
    struct thread_state *state = mqi_threads.lookup(&tid);
    if (state && state->in_call)
        state->to_socket = 1;
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
