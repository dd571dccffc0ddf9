/*
 * faults.bpf.c - page faults of the traced processes, per page, told apart as minor or major.
 *
 * Loaded by probes/ebpf/faults.py through bcc. Every parameter arrives as an integer -D define (below);
 * the sets of processes and files to trace arrive as entries of hash maps. Nothing else varies.
 * Tracepoint fields are read by name (args->field: bcc builds each struct from the event's format file),
 * so field widths and offsets may change between kernels.
 *
 * Tracepoints, and why each one:
 *   exceptions:page_fault_user    every CPU page-fault exception taken in user mode, with its address and
 *                                 error code (write bit). It counts what perf's page-faults counts, and
 *                                 its address (mapped to a file through /proc/PID/maps in user space)
 *                                 says which file page faulted, anonymous or file-backed.
 *   exceptions:page_fault_kernel  (optional) exceptions the kernel takes on user addresses while it copies
 *                                 to or from user memory (read() into a fresh buffer, write() from a
 *                                 mapping); perf counts these too, unless page faults were disabled
 *                                 (atomic copies, which then retry). Kernel addresses are ignored.
 *   filemap:mm_filemap_fault      filemap_fault() ran: the fault needs a file page that fault-around did
 *                                 not map. Gives the page as (device, inode, index), and shows retries:
 *                                 the same page entering filemap_fault() twice within one fault.
 *   filemap:mm_filemap_map_pages  fault-around mapped the cached, up-to-date pages it found in the window
 *                                 [index, last_index] around a read fault; those pages will not fault. The
 *                                 event gives the window, not how many pages in it were newly mapped.
 *   filemap:mm_filemap_add_to_page_cache
 *                                 a folio entered the page cache. When the faulting task itself inserts
 *                                 the folio holding the page it faults on, filemap_fault() found no page
 *                                 in the cache, which is exactly when the kernel returns VM_FAULT_MAJOR.
 *   writeback:writeback_dirty_folio  (optional; ino, index) a clean folio became dirty. Inside a write fault
 *                                 on a page already mapped read-only (page_mkwrite: no filemap_fault()
 *                                 runs), it names the file and the folio the fault wrote to.
 *   ext4:ext4_allocate_inode, ext4:ext4_free_inode  (optional) the store's new files: store_files.h
 *
 * Where a fault lands (placed by the kernel, at the time, so it needs nothing of the process afterwards: a
 * process that exits within the interval keeps its file faults). Every exception is first recorded by
 * address (mqi_fault_pages); when the kernel then names the file page the fault is on, the fault moves to
 * that page (mqi_file_pages, per device, inode and page):
 *   - filemap_fault()'s first pass within the exception: (device, inode, index) of the faulting page;
 *   - fault-around mapped it (map_pages, and no filemap_fault() follows): the window's file and the page
 *     at the fault's offset within its fault-around block (FAULT_AROUND_PAGES, aligned in the address space
 *     as the kernel aligns the window). Exact, except in the first block of a mapping that does not start on
 *     a block boundary, where the window starts at the mapping and the page may be placed up to
 *     FAULT_AROUND_PAGES - 1 pages after the true one, inside the same window. A filemap_fault() that
 *     follows in the same fault (the page was not cached) moves it to the exact page;
 *   - a write to a page mapped read-only that made its folio dirty: the file's inode and the folio's first
 *     page (the event names the folio, not the page within it), on an unknown device (user space finds it
 *     by inode). Told from a write() dirtying a folio right after the thread's last fault by the exception
 *     handler on the kernel stack (or, without its address, the claim window).
 *   The rest stay placed by address and are resolved in user space against /proc/PID/maps: anonymous
 *   memory, and file faults with no such event (a write to a page of a folio already dirty; shmem/tmpfs
 *   files, whose faults do not run filemap_fault()). A fault whose address record was already read when the
 *   kernel names its page (an interval ended within the fault) stays placed by address.
 *
 * Minor or major (the kernel's own rule, mm_account_fault(): VM_FAULT_MAJOR, or a retried fault):
 *   - major when the faulting task adds to the page cache a folio that starts at or before the faulting
 *     index of the same inode, while that fault is in flight (sync readahead or FGP_CREAT of the missing
 *     page; async readahead only adds folios after it, so it does not count);
 *   - for exceptions, major also when filemap_fault() runs again for the same page within the fault (it
 *     was retried after waiting for I/O): on the second pass for exceptions taken in kernel mode, which
 *     retry under the mmap lock with FAULT_FLAG_TRIED; on the third pass for user-mode exceptions, whose
 *     first retry only moves from the per-VMA lock to the mmap lock and is major only if the first pass
 *     was (which the page-cache insertion already shows);
 *   - every other fault is minor: anonymous memory, pages found in the cache, write-protect faults.
 *   A fault "in flight" is the last exception of the thread (mqi_inflight). There is no tracepoint at the
 *   end of a fault, so whether a filemap_fault() belongs to an exception is told, cheapest sign first:
 *   inside a populating syscall (mqi_popl_enter/exit: mlock, MADV_POPULATE_*, MAP_POPULATE, ...) it is
 *   the kernel faulting on the process's behalf; else a first pass within CLAIM_WINDOW_TICKS timer ticks of
 *   a claimable exception is that exception's (a first pass takes microseconds; ticks, not a clock: reading
 *   the clock costs ~90 ns per event here, bpf_jiffies64() nothing); else the kernel stack decides: the
 *   exception handler's text (EXCEPTION_IP_START..END) is on it or not (get_user_pages in other
 *   syscalls). Without those addresses (symbols hidden, another architecture) it is a populate fault.
 *   Populate faults are counted apart, and are major only on the page-cache evidence (the kernel's own
 *   majflt counts MAP_POPULATE and mlock faults as minor even when they read the page: they retry
 *   without FAULT_FLAG_TRIED; MADV_POPULATE_* ones as major).
 *
 * Maps (tgid = process id, tid = thread id):
 *   mqi_tgids        the tgids to trace (scope.h: tgid_traced() asks it when FILTER_TGIDS is 1)
 *   mqi_inodes       the store's files, whose pages get per-page fault records (when FILTER_INODES is 1;
 *                    followed from their creation: store_files.h); fault-around windows are recorded for
 *                    every file (at most one per fault). Faults placed by dirtying (no device) are
 *                    recorded whatever the file: user space keeps the store's.
 *   mqi_totals       per-tgid cumulative counters (struct fault_totals); never drained, user space takes
 *                    differences, so no event is lost between reads. Key OTHER_TGIDS collects the
 *                    counters of processes that found the map full.
 *   mqi_fault_pages  faults per user page, one record per (tgid, group of GROUP_PAGES pages of the address
 *                    space) with a counter per page; drained by user space every interval
 *   mqi_file_pages   faults the kernel placed on a file page (above), major and populate faults, per file
 *                    page: one record per (tgid, device, inode, group of GROUP_PAGES pages of the file)
 *                    with counters per page; drained.
 *   mqi_fault_around fault-around windows per (tgid, device, inode, first, last index); drained
 *   mqi_inflight     per-thread state of the fault in flight (LRU: threads that exit age out)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS, FILTER_INODES  1 to restrict to the sets above, 0 for every process / file
 *   MAX_TGIDS, MAX_INODES, MAX_FAULT_PAGES, MAX_FILE_PAGES, MAX_FAULT_AROUND, MAX_THREADS, MAX_STORE_DIRS
 *                                map sizes (the two page maps in records of GROUP_PAGES pages)
 *   FOLLOW_CREATION, HAVE_EXT4_ALLOC, HAVE_EXT4_FREE  how the store's files are followed (store_files.h)
 *   HAVE_DIRTY_FOLIO             1 where the kernel has writeback:writeback_dirty_folio
 *   FAULT_AROUND_PAGES           the kernel's fault-around block in pages (fault_around_bytes / page size)
 *   GROUP_SHIFT                  log2 of GROUP_PAGES, the pages one per-page record covers
 *   OTHER_TGIDS                  the mqi_totals key of processes that did not fit
 *   IGNORE_TGID                  the tracer itself, left out when every process is traced
 *   EXCEPTION_IP_START, _END     the kernel text of the page-fault exception handler (exc_page_fault on
 *                                x86), 0 when unknown
 *   STACK_FRAMES                 kernel stack frames searched for it
 *   CLAIM_WINDOW_TICKS           without those: in how many timer ticks (jiffies) after an exception its
 *                                first filemap_fault() pass must come
 *   PAGE_SHIFT                   log2 of the page size
 *   WRITE_FAULT_MASK             error_code bit of a write fault (x86: 2), 0 where unknown
 *   PRESENT_FAULT_MASK           error_code bit of a fault on a present page (x86: 1), 0 where unknown
 */

struct fault_totals {
    u64 user_faults;           /* exceptions in user mode */
    u64 kernel_faults;         /* exceptions in kernel mode on user addresses */
    u64 write_faults;
    u64 file_faults;           /* exceptions that ran filemap_fault() */
    u64 major_faults;          /* exceptions classified major */
    u64 populate_faults;       /* filemap_fault() outside any exception */
    u64 populate_major_faults;
    u64 fault_around_events;
    u64 lost_fault_pages;      /* per-page records that found mqi_fault_pages full */
    u64 lost_file_pages;       /* records that found mqi_file_pages or mqi_fault_around full */
    u64 placed_faults;         /* exceptions the kernel placed on a file page (moved off their address) */
};

#include "scope.h"
#include "store_files.h"

/*
 * Per-page counts are kept in records of GROUP_PAGES consecutive pages. A fault-heavy workload touches each
 * page once, in order: per page, a new hash entry costs an allocation and a cache miss (~400 ns measured
 * here), while the next page of a group finds its record hot and adds one counter (~50 ns).
 */
#define GROUP_PAGES (1 << GROUP_SHIFT)

struct fault_page_key {
    u32 tgid;
    u32 pad;
    u64 group;                 /* user address >> (PAGE_SHIFT + GROUP_SHIFT) */
};

struct fault_page_counts {
    u32 faults[GROUP_PAGES];   /* [page within the group] */
    u32 write_faults[GROUP_PAGES];
};

struct file_page_key {
    u64 ino;
    u64 group;                 /* page index >> GROUP_SHIFT */
    u32 dev;
    u32 tgid;
};

enum file_page_count { MAJOR_FAULT, POPULATE_FAULT, POPULATE_MAJOR_FAULT };

struct file_page_counts {
    u32 faults[GROUP_PAGES];   /* exceptions placed on the page by the kernel */
    u32 write_faults[GROUP_PAGES];
    u32 major_faults[GROUP_PAGES];
    u32 populate_faults[GROUP_PAGES];
    u32 populate_major_faults[GROUP_PAGES];
};

/* How an exception was placed on a file page (struct inflight `placed`). */
enum placement { NOT_PLACED, PLACED_BY_FAULT_AROUND, PLACED_BY_FILEMAP, PLACED_BY_DIRTYING };

struct fault_around_key {
    u64 ino;
    u64 index;
    u64 last_index;
    u32 dev;
    u32 tgid;
};

struct inflight {
    u64 started_tick;          /* when the exception was taken, in jiffies */
    u64 address;               /* 0 for a populate fault */
    u64 ino;                   /* the file page it is on (once a filemap_fault() pass or placement says) */
    u64 index;
    u32 dev;
    u8 passes;                 /* filemap_fault() passes on this page; 0: none yet */
    u8 retried_major_at;       /* the pass at which a retry makes the fault major; 0: never */
    u8 major;                  /* already counted as major */
    u8 populate;
    u8 populating;             /* inside a syscall that populates memory (mlock, madvise, mmap, ...) */
    u8 write;                  /* the exception's error code says write */
    u8 present;                /* ... and that the page was present (a write to a read-only mapping) */
    u8 placed;                 /* enum placement */
};

BPF_HASH(mqi_totals, u32, struct fault_totals, MAX_TGIDS);
BPF_HASH(mqi_fault_pages, struct fault_page_key, struct fault_page_counts, MAX_FAULT_PAGES);
BPF_HASH(mqi_file_pages, struct file_page_key, struct file_page_counts, MAX_FILE_PAGES);
BPF_F_TABLE("hash", struct fault_around_key, u64, mqi_fault_around, MAX_FAULT_AROUND, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", u32, struct inflight, mqi_inflight, MAX_THREADS);

/* Whether the file's pages get records; device 0 (unknown: a placement by dirtying) is left to user space. */
static __always_inline int inode_recorded(u64 ino, u32 dev)
{
#if FILTER_INODES
    return dev == 0 || store_generation(dev, ino) != 0;
#else
    return 1;
#endif
}

/* The running thread's fault in flight, when its process is traced (its tgid in *tgid); else NULL. */
static __always_inline struct inflight *traced_inflight(u32 *tgid)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    *tgid = id >> 32;
    if (!tgid_traced(*tgid))
        return NULL;
    return mqi_inflight.lookup(&tid);
}

static __always_inline struct fault_totals *totals_of(u32 tgid)
{
    struct fault_totals zero = {};
    struct fault_totals *totals = mqi_totals.lookup_or_try_init(&tgid, &zero);
    if (totals)
        return totals;
    u32 others = OTHER_TGIDS;  /* created by user space before attaching */
    return mqi_totals.lookup(&others);
}

static __always_inline u32 page_in_group(u64 page)
{
    return page & (GROUP_PAGES - 1);
}

static __always_inline void record_fault_page(u32 tgid, u64 address, int write, struct fault_totals *totals)
{
    struct fault_page_key key = {.tgid = tgid, .group = address >> (PAGE_SHIFT + GROUP_SHIFT)};
    struct fault_page_counts *counts = mqi_fault_pages.lookup(&key);
    if (!counts) {
        struct fault_page_counts zero = {};
        mqi_fault_pages.insert(&key, &zero);  /* fails when full, or when another CPU just inserted it */
        counts = mqi_fault_pages.lookup(&key);
        if (!counts) {
            __sync_fetch_and_add(&totals->lost_fault_pages, 1);
            return;
        }
    }
    u32 page = page_in_group(address >> PAGE_SHIFT);
    __sync_fetch_and_add(&counts->faults[page], 1);
    if (write)
        __sync_fetch_and_add(&counts->write_faults[page], 1);
}

/* The record of a file page of a recorded inode, made if need be; NULL when not recorded (or lost). */
static __always_inline struct file_page_counts *file_page_record(u32 tgid, u32 dev, u64 ino, u64 index,
                                                                 struct fault_totals *totals)
{
    if (!inode_recorded(ino, dev))
        return NULL;
    struct file_page_key key = {.ino = ino, .group = index >> GROUP_SHIFT, .dev = dev, .tgid = tgid};
    struct file_page_counts *counts = mqi_file_pages.lookup(&key);
    if (counts)
        return counts;
    struct file_page_counts zero = {};
    mqi_file_pages.insert(&key, &zero);
    counts = mqi_file_pages.lookup(&key);
    if (!counts)
        __sync_fetch_and_add(&totals->lost_file_pages, 1);
    return counts;
}

/* Counts one major or populate fault (`which`) on a page of a recorded inode. */
static __always_inline void record_file_page(u32 tgid, u32 dev, u64 ino, u64 index, enum file_page_count which,
                                             struct fault_totals *totals)
{
    struct file_page_counts *counts = file_page_record(tgid, dev, ino, index, totals);
    if (!counts)
        return;
    u32 page = page_in_group(index);
    if (which == MAJOR_FAULT)
        __sync_fetch_and_add(&counts->major_faults[page], 1);
    else if (which == POPULATE_FAULT)
        __sync_fetch_and_add(&counts->populate_faults[page], 1);
    else
        __sync_fetch_and_add(&counts->populate_major_faults[page], 1);
}

/* A new exception: the thread's previous fault, whatever it was, is over. */
static __always_inline int on_exception(u64 address, unsigned long error_code, int kernel_mode)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct fault_totals *totals = totals_of(tgid);
    if (!totals)
        return 0;
    int write = (error_code & WRITE_FAULT_MASK) != 0;
    if (kernel_mode)
        __sync_fetch_and_add(&totals->kernel_faults, 1);
    else
        __sync_fetch_and_add(&totals->user_faults, 1);
    if (write)
        __sync_fetch_and_add(&totals->write_faults, 1);
    record_fault_page(tgid, address, write, totals);

    struct inflight fault = {.started_tick = bpf_jiffies64(), .address = address,
                             .retried_major_at = kernel_mode ? 2 : 3, .write = write,
                             .present = (error_code & PRESENT_FAULT_MASK) != 0};
    struct inflight *previous = mqi_inflight.lookup(&tid);
    if (previous)
        *previous = fault;  /* in place: an LRU update allocates, and this runs on every fault */
    else
        mqi_inflight.update(&tid, &fault);
    return 0;
}

int mqi_fault_user(struct tracepoint__exceptions__page_fault_user *args)
{
    return on_exception(args->address, args->error_code, 0);
}

int mqi_fault_kern(struct tracepoint__exceptions__page_fault_kernel *args)
{
    if (args->address >> 63)  /* a kernel address: not a fault on the process's memory */
        return 0;
    return on_exception(args->address, args->error_code, 1);
}

static __always_inline void count_major(struct inflight *fault, u32 tgid)
{
    fault->major = 1;
    struct fault_totals *totals = totals_of(tgid);
    if (!totals)
        return;
    if (fault->populate)
        __sync_fetch_and_add(&totals->populate_major_faults, 1);
    else
        __sync_fetch_and_add(&totals->major_faults, 1);
    record_file_page(tgid, fault->dev, fault->ino, fault->index,
                     fault->populate ? POPULATE_MAJOR_FAULT : MAJOR_FAULT, totals);
}

/*
 * Whether the kernel stack runs through the page-fault exception handler (its text is
 * [EXCEPTION_IP_START, EXCEPTION_IP_END), from /proc/kallsyms): 1 yes, 0 no (a syscall populating memory),
 * -1 unknown (no addresses given, or no stack).
 */
static __always_inline int in_exception(void *ctx)
{
#if EXCEPTION_IP_START
    u64 ips[STACK_FRAMES] = {};
    long bytes = bpf_get_stack(ctx, ips, sizeof(ips), 0);
    if (bytes <= 0)
        return -1;
#pragma unroll
    for (int i = 0; i < STACK_FRAMES; i++) {
        if (i * sizeof(u64) < bytes && ips[i] >= EXCEPTION_IP_START && ips[i] < EXCEPTION_IP_END)
            return 1;
    }
    return 0;
#else
    return -1;
#endif
}

static __always_inline void count_file_fault(u32 tgid, u32 dev, u64 ino, u64 index, int populate,
                                             struct fault_totals *totals)
{
    if (!populate) {
        __sync_fetch_and_add(&totals->file_faults, 1);
        return;  /* its page is where place_fault() put it */
    }
    __sync_fetch_and_add(&totals->populate_faults, 1);
    record_file_page(tgid, dev, ino, index, POPULATE_FAULT, totals);
}

/* --- placing an exception on the file page the kernel names ------------------------------------------ */

/* Takes one fault (and one write fault, if `write`) off the counters of a page; 0 when they are at 0: the
   record was read already (the interval ended within the fault), and the fault stays where it was. */
static __always_inline int take_back(u32 *faults, u32 *write_faults, int write)
{
    if (!*faults)
        return 0;
    __sync_fetch_and_add(faults, -1);
    if (write && *write_faults)
        __sync_fetch_and_add(write_faults, -1);
    return 1;
}

/* Takes the exception off its address record; 0 when it stays placed by address. */
static __always_inline int unrecord_address(u32 tgid, struct inflight *fault)
{
    struct fault_page_key key = {.tgid = tgid, .group = fault->address >> (PAGE_SHIFT + GROUP_SHIFT)};
    struct fault_page_counts *counts = mqi_fault_pages.lookup(&key);
    u32 page = page_in_group(fault->address >> PAGE_SHIFT);
    return counts && take_back(&counts->faults[page], &counts->write_faults[page], fault->write);
}

/* Takes back the page fault-around's window guessed for the exception; 0 when it stays there. */
static __always_inline int take_back_guess(u32 tgid, struct inflight *fault)
{
    struct file_page_key key = {.ino = fault->ino, .group = fault->index >> GROUP_SHIFT, .dev = fault->dev,
                                .tgid = tgid};
    struct file_page_counts *counts = mqi_file_pages.lookup(&key);
    u32 page = page_in_group(fault->index);
    return counts && take_back(&counts->faults[page], &counts->write_faults[page], fault->write);
}

/*
 * The kernel named the file page (dev, ino, index) the thread's exception is on: the fault moves there from
 * its address record (or from the page fault-around guessed, when filemap_fault() now names the exact one).
 * Device 0: unknown (placed by dirtying).
 */
static __always_inline void place_fault(u32 tgid, struct inflight *fault, u32 dev, u64 ino, u64 index,
                                        enum placement how, struct fault_totals *totals)
{
    if (fault->placed) {
        int same = fault->dev == dev && fault->ino == ino && fault->index == index;
        if (!same && !take_back_guess(tgid, fault)) {
            fault->placed = how;  /* the guess was reported already: it stays there */
            return;
        }
        fault->placed = how;
        if (same)
            return;
    } else if (unrecord_address(tgid, fault)) {
        __sync_fetch_and_add(&totals->placed_faults, 1);
        fault->placed = how;
    } else {
        return;
    }
    fault->dev = dev;
    fault->ino = ino;
    fault->index = index;
    struct file_page_counts *counts = file_page_record(tgid, dev, ino, index, totals);
    if (!counts)
        return;  /* not a recorded file (or lost_file_pages): the totals have it */
    u32 page = page_in_group(index);
    __sync_fetch_and_add(&counts->faults[page], 1);
    if (fault->write)
        __sync_fetch_and_add(&counts->write_faults[page], 1);
}

/* Whether the thread's last exception may still be placed: taken within the claim window, not yet placed
   by filemap_fault() or dirtying, and not a populate fault. */
static __always_inline int placeable(struct inflight *fault)
{
    return fault && fault->placed <= PLACED_BY_FAULT_AROUND && !fault->passes && !fault->populate &&
           bpf_jiffies64() - fault->started_tick <= CLAIM_WINDOW_TICKS;
}

int mqi_filemap_flt(struct tracepoint__filemap__mm_filemap_fault *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    u32 dev = args->s_dev;
    u64 ino = args->i_ino, index = args->index;
    struct inflight *fault = mqi_inflight.lookup(&tid);

    /* a retry (every write fault on a new page of a shared mapping passes twice) needs no totals: count_major
       takes them itself, so the hash lookup below is made once per fault, not once per pass */
    if (fault && fault->passes && fault->dev == dev && fault->ino == ino && fault->index == index) {
        if (fault->passes < 255)
            fault->passes++;  /* the same fault, retried */
        if (!fault->major && fault->retried_major_at && fault->passes >= fault->retried_major_at)
            count_major(fault, tgid);
        return 0;
    }
    struct fault_totals *totals = totals_of(tgid);
    if (!totals)
        return 0;
    /* Cheap signs first; the stack walk costs microseconds, so it only settles what they leave open. */
    int populating = fault && fault->populating;
    int claimable = fault && !fault->passes && !fault->populate;
    int fresh = claimable && bpf_jiffies64() - fault->started_tick <= CLAIM_WINDOW_TICKS;
    int exception = populating ? 0 : fresh ? 1 : in_exception(args) > 0;
    if (exception && claimable) {
        /* the first filemap_fault() pass of the thread's exception: the page it faults on */
        place_fault(tgid, fault, dev, ino, index, PLACED_BY_FILEMAP, totals);
        fault->passes = 1;
        fault->dev = dev;
        fault->ino = ino;
        fault->index = index;
    } else if (exception) {
        /* an exception whose entry we did not see (the LRU let it go, or it began before we attached) */
        struct inflight seen = {.started_tick = bpf_jiffies64(), .ino = ino, .index = index, .dev = dev,
                                .passes = 1, .retried_major_at = 3};
        mqi_inflight.update(&tid, &seen);
    } else {
        /* no exception: the kernel faults for the process inside a syscall (populate) */
        struct inflight populate = {.ino = ino, .index = index, .dev = dev, .passes = 1, .populate = 1,
                                    .populating = populating};
        mqi_inflight.update(&tid, &populate);
    }
    count_file_fault(tgid, dev, ino, index, !exception, totals);
    return 0;
}

int mqi_pcache_add(struct tracepoint__filemap__mm_filemap_add_to_page_cache *args)
{
    u32 tgid;
    struct inflight *fault = traced_inflight(&tgid);
    if (!fault || !fault->passes || fault->major)
        return 0;
    if (fault->dev != args->s_dev || fault->ino != args->i_ino || args->index > fault->index)
        return 0;
    count_major(fault, tgid);
    return 0;
}

int mqi_map_pages(struct tracepoint__filemap__mm_filemap_map_pages *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct fault_totals *totals = totals_of(tgid);
    if (!totals)
        return 0;
    __sync_fetch_and_add(&totals->fault_around_events, 1);
    u32 dev = args->s_dev;
    struct fault_around_key key = {.ino = args->i_ino, .index = args->index, .last_index = args->last_index,
                                   .dev = dev, .tgid = tgid};
    u64 zero = 0;
    u64 *events = mqi_fault_around.lookup_or_try_init(&key, &zero);
    if (events)
        __sync_fetch_and_add(events, 1);
    else
        __sync_fetch_and_add(&totals->lost_file_pages, 1);

    /* The window is aligned to FAULT_AROUND_PAGES in the address space, and holds the faulting page. */
    struct inflight *fault = mqi_inflight.lookup(&tid);
    if (!placeable(fault) || fault->placed || fault->populating)
        return 0;
    u64 index = key.index + ((fault->address >> PAGE_SHIFT) & (FAULT_AROUND_PAGES - 1));
    if (index > key.last_index)
        index = key.last_index;
    place_fault(tgid, fault, dev, key.ino, index, PLACED_BY_FAULT_AROUND, totals);
    return 0;
}

#if HAVE_DIRTY_FOLIO
int mqi_dirtied(struct tracepoint__writeback__writeback_dirty_folio *args)
{
    u32 tgid;
    struct inflight *fault = traced_inflight(&tgid);
    if (!placeable(fault) || fault->placed || !fault->write || !fault->present)
        return 0;
    /* a write() right after the fault dirties folios too: only inside the exception is it the fault's */
    if (in_exception(args) == 0)
        return 0;
    struct fault_totals *totals = totals_of(tgid);
    if (totals)
        place_fault(tgid, fault, 0, args->ino, args->index, PLACED_BY_DIRTYING, totals);
    return 0;
}
#endif

/*
 * The syscalls that populate memory (mlock*, madvise and process_madvise with MADV_POPULATE_*, mmap with
 * MAP_POPULATE or under mlockall(MCL_FUTURE), mremap and remap_file_pages of locked memory): every
 * filemap_fault() the thread runs until the syscall returns is a populate fault, without asking the stack.
 * The price: any syscalls:* tracepoint sends every syscall of every process through the traced slow path
 * (measured: dd bs=1, 4 M syscalls, about +50 ns each). Walking the stack instead costs ~2 us per populated
 * page, which would distort the warm-ups this probe is there to measure (MADV_POPULATE_WRITE takes ~3 us a
 * page); the sendpath and syscalls probes pay the same slow path anyway.
 */
int mqi_popl_enter(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!tgid_traced(tgid))
        return 0;
    struct inflight call = {.populate = 1, .populating = 1};
    mqi_inflight.update(&tid, &call);
    return 0;
}

int mqi_popl_exit(void *ctx)
{
    u32 tgid;
    struct inflight *call = traced_inflight(&tgid);
    if (call)
        call->populating = 0;
    return 0;
}
