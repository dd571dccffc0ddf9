/*
 * writeback.bpf.c - pages dirtied and written back per file, the flusher's work per device, the global
 * dirty state against its thresholds, and writers throttled by balance_dirty_pages().
 *
 * Loaded by probes/ebpf/writeback.py through bcc. Every parameter arrives as an integer -D define (below);
 * the sets of processes and files arrive as entries of hash maps. Nothing else varies. Tracepoint fields
 * are read by name (args->field: bcc builds each struct from the event's format file).
 *
 * Tracepoints, and why each one:
 *   writeback:writeback_dirty_folio  (ino, index) a clean folio became dirty, in the task that dirtied it
 *                          (write(), or a write fault through a shared mapping), so it is filtered by
 *                          process. The event has no folio size and no device: both are looked up in
 *                          mqi_folio_sizes, learnt from the page-cache events below. A folio whose insertion was not seen (cached before the session, or
 *                          its slot since taken by another folio) counts as one page and as an unsized folio.
 *   filemap:mm_filemap_add_to_page_cache     (s_dev, i_ino, index, order) remembers each folio's size while
 *   filemap:mm_filemap_delete_from_page_cache  it is cached, and each inode's device. Every folio of every
 *                          process, so a folio read in by one process and dirtied by another is sized too.
 *   ext4:ext4_writepages_result  (optional; dev, ino, pages_written) pages ext4 sent to the disk for one
 *                          file, from every path: fsync, msync, sync_file_range and the flusher. The generic
 *                          events below miss fsync: it writes through filemap_fdatawrite(), not
 *                          __writeback_single_inode().
 *   writeback:writeback_single_inode_start / writeback_single_inode  (ino, wrote) pages the flusher (and
 *                          sync(2)) wrote for one file, on every filesystem. Where the filesystem reported
 *                          the same pages itself (ext4, inside the pair, same thread) only the rest counts.
 *   writeback:writeback_start / writeback_written  (name, nr_pages, reason) one unit of flusher work on a
 *                          device; nr_pages is what the work has left to write, so the pages it wrote are
 *                          the start's minus the end's (same thread).
 *   writeback:global_dirty_state  (nr_dirty, nr_writeback, background_thresh, dirty_thresh, dirty_limit)
 *                          the system's dirty and under-writeback pages against the thresholds, sampled
 *                          whenever the kernel computes them (writers and flushers at work). Kept per CPU,
 *                          with the time of the last sample, so user space can take the last and the max.
 *   writeback:balance_dirty_pages  (pause, dirty, setpoint, limit, ...) a writer over its share of the dirty
 *                          limit: `pause` > 0 is the milliseconds it is put to sleep. In the writer, so it
 *                          is filtered by process. Kept per (process, CPU).
 *   ext4:ext4_allocate_inode, ext4:ext4_free_inode  (optional) the store's files from their creation:
 *                          store_files.h.
 * Written pages are counted whoever writes them (mostly the flusher threads): for the files in view.
 * Cost: every page-cache insertion and removal on the machine runs a handler here, the price of sizing dirtied
 * folios exactly. So the sizes live in a set-associative table (mqi_folio_sizes, below): one array slot written
 * per event, where a hash or LRU map update allocated an element (measured here: ~60 ns against ~450-650 ns).
 *
 * Files in view: with FILTER_INODES the store's files (mqi_inodes, followed from their creation:
 * store_files.h); else with FILTER_TGIDS the files the traced processes dirtied during the session
 * (mqi_seen_inodes, filled here); else every file.
 *
 * Maps (tgid = process id, tid = thread id):
 *   mqi_tgids         the tgids to trace (scope.h: tgid_traced() asks it when FILTER_TGIDS is 1)
 *   mqi_inodes        the store's files (when FILTER_INODES is 1), and the sets of the store's directories:
 *                     store_files.h
 *   mqi_seen_inodes   inodes the traced processes dirtied (when only FILTER_TGIDS is 1)
 *   mqi_totals        one struct writeback_totals, cumulative: user space takes differences
 *   mqi_folio_sizes   the size and device of cached folios, FOLIO_WAYS-way set-associative: the set of a
 *                     folio is a hash of (inode, index); a slot holds that hash's upper bits as a tag with the
 *                     folio's order + 1 (0: empty) in one u64, written after the device and read before it,
 *                     and when it was inserted. An insertion into a full set makes the folio inserted longest
 *                     ago unsized; a tag matching another folio's has odds of 2^-(64-FOLIO_SET_BITS).
 *   mqi_inode_devs    inode -> device, for events that give none (LRU; user space adds the store's files)
 *   mqi_dirtiers      per tgid: folios and pages dirtied, and the process name; drained every interval
 *                     (this and the other drained maps are two halves each, NAME_0 and NAME_1: halves.h)
 *   mqi_files         per (inode, device, generation) in view: dirtied and written; drained
 *   mqi_throttles     per (tgid, CPU): balance_dirty_pages rounds and pauses, the process name; drained
 *   mqi_dirty_state   per CPU: global_dirty_state samples, last and max; drained
 *   mqi_flushes       per (device name, reason): flusher work and pages written; drained
 *   mqi_work_starts   per thread: nr_pages at writeback_start (LRU)
 *   mqi_inode_writes  per thread: the inode __writeback_single_inode() is writing, and the pages the
 *                     filesystem reported for it meanwhile (LRU)
 *
 * Defines (all integers, rendered by probes/ebpf/loader.Parameters):
 *   FILTER_TGIDS, FILTER_INODES  1 to restrict to the sets above, 0 for every process / file
 *   MAX_TGIDS, MAX_INODES, MAX_THREADS, MAX_CPUS, MAX_STORE_DIRS  map sizes
 *   FOLLOW_CREATION, HAVE_EXT4_ALLOC, HAVE_EXT4_FREE  how the store's files are followed (store_files.h)
 *   FOLIO_SLOT_BITS              log2 of the slots of mqi_folio_sizes
 *   IGNORE_TGID                  the tracer itself, left out when every process is traced
 *   HAVE_EXT4_WRITEPAGES         1 where the kernel has ext4:ext4_writepages_result
 */

struct writeback_totals {
    u64 dirtied_folios;        /* by the traced processes, every file */
    u64 dirtied_pages;
    u64 unsized_folios;        /* dirtied folios of unknown size, counted as one page */
    u64 written_pages;         /* of the files in view */
    u64 written_pages_all;     /* of every file */
    u64 lost_records;          /* records that found a drained map full */
};

#include "scope.h"
#include "store_files.h"
#include "halves.h"

struct file_key {
    u64 ino;
    u32 dev;
    u32 generation;            /* store_files.h: two files with one inode number in an interval apart */
};

struct dirtied_counts {
    u64 dirtied_folios;
    u64 dirtied_pages;
    u64 unsized_folios;
    char comm[16];             /* kept: short-lived writers are gone when user space looks */
};

struct file_counts {
    u64 dirtied_folios;
    u64 dirtied_pages;
    u64 unsized_folios;
    u64 written_pages;
    u32 last_tgid;             /* a traced process that dirtied the file, for user space to name it */
    u32 pad;
};

struct throttle_key {
    u32 tgid;
    u32 cpu;
};

struct throttle {
    u64 checks;                /* balance_dirty_pages() rounds traced */
    u64 pauses;                /* of them, those that put the writer to sleep */
    u64 pause_ms;
    u64 max_pause_ms;
    /* at the longest pause, in pages (ratelimits in KiB/s) */
    u64 dirty;
    u64 setpoint;
    u64 limit;
    u64 wb_dirty;
    u64 task_ratelimit;
    u64 dirty_ratelimit;
    char comm[16];
};

struct dirty_state {
    u64 samples;
    u64 last_ns;
    u64 nr_dirty;
    u64 nr_writeback;
    u64 background_thresh;
    u64 dirty_thresh;
    u64 dirty_limit;
    u64 max_nr_dirty;
    u64 max_nr_writeback;
    u64 max_background_thresh;
    u64 max_dirty_thresh;
    u64 max_dirty_limit;
};

struct flush_key {
    char bdi[32];
    s32 reason;
    u32 pad;
};

struct flush_counts {
    u64 works;
    u64 written_pages;
};

struct inode_write {
    u64 ino;
    u64 fs_pages;
};

BPF_HASH(mqi_seen_inodes, u64, u8, MAX_INODES);
BPF_ARRAY(mqi_totals, struct writeback_totals, 1);
struct folio_slot {
    u64 tag_order;
    u32 dev;
    u32 stamp;                 /* when the folio was inserted, in units of 2^16 ns (wraps after 3 days) */
};

BPF_ARRAY(mqi_folio_sizes, struct folio_slot, 1 << FOLIO_SLOT_BITS);
BPF_TABLE("lru_hash", u64, u32, mqi_inode_devs, MAX_INODES);
BPF_F_TABLE("hash", u32, struct dirtied_counts, mqi_dirtiers_0, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, struct dirtied_counts, mqi_dirtiers_1, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct file_key, struct file_counts, mqi_files_0, MAX_INODES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct file_key, struct file_counts, mqi_files_1, MAX_INODES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct throttle_key, struct throttle, mqi_throttles_0, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct throttle_key, struct throttle, mqi_throttles_1, MAX_TGIDS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, struct dirty_state, mqi_dirty_state_0, MAX_CPUS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, struct dirty_state, mqi_dirty_state_1, MAX_CPUS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct flush_key, struct flush_counts, mqi_flushes_0, 1024, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct flush_key, struct flush_counts, mqi_flushes_1, 1024, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", u32, s64, mqi_work_starts, MAX_THREADS);
BPF_TABLE("lru_hash", u32, struct inode_write, mqi_inode_writes, MAX_THREADS);

static __always_inline struct writeback_totals *totals_of_session(void)
{
    u32 zero = 0;
    return mqi_totals.lookup(&zero);
}

static __always_inline void remember_device(u64 ino, u32 dev)
{
    u32 *known = mqi_inode_devs.lookup(&ino);
    if (!known || *known != dev)
        mqi_inode_devs.update(&ino, &dev);
}

static __always_inline u32 device_of(u64 ino)
{
    u32 *dev = mqi_inode_devs.lookup(&ino);
    return dev ? *dev : 0;  /* 0: unknown, user space matches the inode alone */
}

static __always_inline struct file_counts *file_of(struct file_key *file, struct writeback_totals *totals)
{
    struct file_counts zero = {};
    struct file_counts *counts;
    if (writing_half())
        counts = mqi_files_1.lookup_or_try_init(file, &zero);
    else
        counts = mqi_files_0.lookup_or_try_init(file, &zero);
    if (!counts)
        __sync_fetch_and_add(&totals->lost_records, 1);
    return counts;
}

/* The generation a folio dirtied by a traced process is recorded under, per file (the file is then one in
 * view); 0: not recorded per file. */
static __always_inline u32 dirtied_in_view(u32 dev, u64 ino)
{
#if FILTER_INODES
    return store_generation(dev, ino);
#else
#if FILTER_TGIDS
    u8 one = 1;
    mqi_seen_inodes.update(&ino, &one);  /* by inode: the device may not be known yet */
#endif
    return LISTED_GENERATION;
#endif
}

/* The generation pages written back are recorded under, per file; 0: not a file in view. */
static __always_inline u32 written_in_view(u32 dev, u64 ino)
{
#if FILTER_INODES
    return store_generation(dev, ino);
#elif FILTER_TGIDS
    return mqi_seen_inodes.lookup(&ino) ? LISTED_GENERATION : 0;
#else
    return LISTED_GENERATION;
#endif
}

/* --- folio sizes ------------------------------------------------------------------------------------- */

/* The table is set-associative: FOLIO_WAYS slots per set, and an insertion into a full set takes the slot of
 * the folio inserted longest ago. The table is always full (the machine caches more folios than it has
 * slots), so in a direct-mapped table any insertion hashed to a folio's slot made it unsized: 3 of 4 pages
 * were lost for a few folios of most 64 MiB segments warmed during the demo (a folio is dirtied a moment after
 * readahead inserted it, while the insertions of that readahead window land across the table), and a folio
 * dirtied again seconds later (written back meanwhile) had lost its slot with odds of 1 in 17 when the
 * machine inserted 16,000 folios in between. Here a folio loses its size only when FOLIO_WAYS later
 * insertions land in its set before it is dirtied: odds of about 1 in 2x10^7 for those 16,000. */
#define FOLIO_WAYS_LOG2 3
#define FOLIO_WAYS (1 << FOLIO_WAYS_LOG2)
#define FOLIO_SET_BITS (FOLIO_SLOT_BITS - FOLIO_WAYS_LOG2)
#define FOLIO_TAG_MASK (~0ULL << FOLIO_SET_BITS)
#define FOLIO_STAMP_SHIFT 16

/* A 64-bit mix of (inode, index) (splitmix64's finaliser): its low bits pick the set, the rest is the tag. */
static __always_inline u64 folio_hash(u64 ino, u64 index)
{
    u64 hash = ino * 0x9E3779B97F4A7C15ULL + index;
    hash = (hash ^ (hash >> 30)) * 0xBF58476D1CE4E5B9ULL;
    hash = (hash ^ (hash >> 27)) * 0x94D049BB133111EBULL;
    return hash ^ (hash >> 31);
}

static __always_inline struct folio_slot *folio_slot(u64 hash, u32 way)
{
    u32 slot = (u32)(hash & ((1 << FOLIO_SET_BITS) - 1)) * FOLIO_WAYS + way;
    return mqi_folio_sizes.lookup(&slot);
}

static __always_inline int holds_folio(struct folio_slot *slot, u64 hash)
{
    u64 entry = *(volatile u64 *)&slot->tag_order;
    return (entry & FOLIO_TAG_MASK) == (hash & FOLIO_TAG_MASK) && (entry & ~FOLIO_TAG_MASK);
}

/* The folio's pages, and its device in *dev, when its insertion is remembered; else 0. */
static __always_inline u64 remembered_pages(u64 ino, u64 index, u32 *dev)
{
    u64 hash = folio_hash(ino, index);
#pragma unroll
    for (u32 way = 0; way < FOLIO_WAYS; way++) {
        struct folio_slot *slot = folio_slot(hash, way);
        if (slot && holds_folio(slot, hash)) {
            u64 entry = *(volatile u64 *)&slot->tag_order;
            *dev = *(volatile u32 *)&slot->dev;
            return folio_pages((entry & ~FOLIO_TAG_MASK) - 1);
        }
    }
    return 0;
}

/* The slot an inserted folio takes: its own (inserted again), else an empty one, else the oldest. */
static __always_inline struct folio_slot *slot_for_insertion(u64 hash, u32 now)
{
    struct folio_slot *chosen = NULL;
    u32 chosen_age = 0;
#pragma unroll
    for (u32 way = 0; way < FOLIO_WAYS; way++) {
        struct folio_slot *slot = folio_slot(hash, way);
        if (!slot)
            continue;
        if (holds_folio(slot, hash) || !(*(volatile u64 *)&slot->tag_order & ~FOLIO_TAG_MASK))
            return slot;
        u32 age = now - slot->stamp;  /* unsigned: right across the stamp's wrap */
        if (!chosen || age > chosen_age) {
            chosen = slot;
            chosen_age = age;
        }
    }
    return chosen;
}

int mqi_wb_added(struct tracepoint__filemap__mm_filemap_add_to_page_cache *args)
{
    u64 ino = args->i_ino;
    u32 dev = args->s_dev;
    u64 hash = folio_hash(ino, args->index);
    u32 now = bpf_ktime_get_ns() >> FOLIO_STAMP_SHIFT;
    struct folio_slot *slot = slot_for_insertion(hash, now);
    if (slot) {
        /* device first, tag last (volatile keeps the order): a reader that sees the tag sees the device */
        *(volatile u32 *)&slot->dev = dev;
        slot->stamp = now;
        *(volatile u64 *)&slot->tag_order = (hash & FOLIO_TAG_MASK) | ((args->order & 31) + 1);
    }
    remember_device(ino, dev);
    return 0;
}

int mqi_wb_deleted(struct tracepoint__filemap__mm_filemap_delete_from_page_cache *args)
{
    u64 hash = folio_hash(args->i_ino, args->index);
#pragma unroll
    for (u32 way = 0; way < FOLIO_WAYS; way++) {
        struct folio_slot *slot = folio_slot(hash, way);
        if (slot && holds_folio(slot, hash)) {
            slot->tag_order = 0;
            return 0;
        }
    }
    return 0;
}

/* --- dirtied ----------------------------------------------------------------------------------------- */

static __always_inline void count_dirtied(u64 *folios, u64 *pages, u64 *unsized, u64 folio_pages, int sized)
{
    __sync_fetch_and_add(folios, 1);
    __sync_fetch_and_add(pages, folio_pages);
    if (!sized)
        __sync_fetch_and_add(unsized, 1);
}

int mqi_wb_dirtied(struct tracepoint__writeback__writeback_dirty_folio *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!tgid_traced(tgid))
        return 0;
    struct writeback_totals *totals = totals_of_session();
    if (!totals)
        return 0;
    u64 ino = args->ino;
    u32 dev = 0;
    u64 remembered = remembered_pages(ino, args->index, &dev);
    int sized = remembered != 0;
    u64 pages = sized ? remembered : 1;
    count_dirtied(&totals->dirtied_folios, &totals->dirtied_pages, &totals->unsized_folios, pages, sized);

    struct dirtied_counts zero = {};
    struct dirtied_counts *process;
    if (writing_half())
        process = mqi_dirtiers_1.lookup_or_try_init(&tgid, &zero);
    else
        process = mqi_dirtiers_0.lookup_or_try_init(&tgid, &zero);
    if (process) {
        count_dirtied(&process->dirtied_folios, &process->dirtied_pages, &process->unsized_folios, pages,
                      sized);
        if (!process->comm[0])
            bpf_get_current_comm(&process->comm, sizeof(process->comm));
    } else {
        __sync_fetch_and_add(&totals->lost_records, 1);
    }

    struct file_key file = {.ino = ino, .dev = sized ? dev : device_of(ino)};
    file.generation = dirtied_in_view(file.dev, ino);
    if (!file.generation)
        return 0;
    struct file_counts *counts = file_of(&file, totals);
    if (counts) {
        count_dirtied(&counts->dirtied_folios, &counts->dirtied_pages, &counts->unsized_folios, pages, sized);
        counts->last_tgid = tgid;
    }
    return 0;
}

/* --- written ----------------------------------------------------------------------------------------- */

static __always_inline void count_written(u64 ino, u32 dev, u64 pages)
{
    struct writeback_totals *totals = totals_of_session();
    if (!totals)
        return;
    __sync_fetch_and_add(&totals->written_pages_all, pages);
    struct file_key file = {.ino = ino, .dev = dev, .generation = written_in_view(dev, ino)};
    if (!file.generation)
        return;
    __sync_fetch_and_add(&totals->written_pages, pages);
    struct file_counts *counts = file_of(&file, totals);
    if (counts)
        __sync_fetch_and_add(&counts->written_pages, pages);
}

#if HAVE_EXT4_WRITEPAGES
int mqi_wb_ext4_res(struct tracepoint__ext4__ext4_writepages_result *args)
{
    u64 ino = args->ino;
    u32 dev = args->dev;
    s64 pages = args->pages_written;
    remember_device(ino, dev);
    if (pages <= 0)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct inode_write *writing = mqi_inode_writes.lookup(&tid);
    if (writing && writing->ino == ino)
        writing->fs_pages += pages;  /* writeback_single_inode will report them again */
    count_written(ino, dev, pages);
    return 0;
}
#endif

int mqi_wb_ino_beg(struct tracepoint__writeback__writeback_single_inode_start *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct inode_write writing = {.ino = args->ino};
    mqi_inode_writes.update(&tid, &writing);
    return 0;
}

int mqi_wb_ino_end(struct tracepoint__writeback__writeback_single_inode *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 ino = args->ino;
    struct inode_write *writing = mqi_inode_writes.lookup(&tid);
    s64 reported = writing && writing->ino == ino ? writing->fs_pages : 0;
    mqi_inode_writes.delete(&tid);
    s64 rest = (s64)args->wrote - reported;
    if (rest > 0)
        count_written(ino, device_of(ino), rest);
    return 0;
}

/* --- the flusher's work ------------------------------------------------------------------------------ */

int mqi_wb_work_beg(struct tracepoint__writeback__writeback_start *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s64 left = args->nr_pages;
    mqi_work_starts.update(&tid, &left);
    return 0;
}

int mqi_wb_work_end(struct tracepoint__writeback__writeback_written *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s64 *left_at_start = mqi_work_starts.lookup(&tid);
    if (!left_at_start)
        return 0;  /* the work started before the session */
    s64 written = *left_at_start - (s64)args->nr_pages;
    mqi_work_starts.delete(&tid);
    struct flush_key key = {.reason = args->reason};
    bpf_probe_read_kernel(&key.bdi, sizeof(key.bdi), args->name);
    struct flush_counts zero = {};
    struct flush_counts *counts;
    if (writing_half())
        counts = mqi_flushes_1.lookup_or_try_init(&key, &zero);
    else
        counts = mqi_flushes_0.lookup_or_try_init(&key, &zero);
    if (!counts) {
        struct writeback_totals *totals = totals_of_session();
        if (totals)
            __sync_fetch_and_add(&totals->lost_records, 1);
        return 0;
    }
    __sync_fetch_and_add(&counts->works, 1);
    if (written > 0)
        __sync_fetch_and_add(&counts->written_pages, written);
    return 0;
}

/* --- the dirty state and throttling ------------------------------------------------------------------ */

static __always_inline void keep_max(u64 *max, u64 value)
{
    if (value > *max)
        *max = value;
}

int mqi_wb_dirty_st(struct tracepoint__writeback__global_dirty_state *args)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct dirty_state zero = {};
    struct dirty_state *state;
    if (writing_half())
        state = mqi_dirty_state_1.lookup_or_try_init(&cpu, &zero);
    else
        state = mqi_dirty_state_0.lookup_or_try_init(&cpu, &zero);
    if (!state)
        return 0;
    /* One entry per CPU: no other CPU writes it, so the fields of one sample stay together. */
    state->samples++;
    state->last_ns = bpf_ktime_get_ns();
    state->nr_dirty = args->nr_dirty;
    state->nr_writeback = args->nr_writeback;
    state->background_thresh = args->background_thresh;
    state->dirty_thresh = args->dirty_thresh;
    state->dirty_limit = args->dirty_limit;
    keep_max(&state->max_nr_dirty, state->nr_dirty);
    keep_max(&state->max_nr_writeback, state->nr_writeback);
    keep_max(&state->max_background_thresh, state->background_thresh);
    keep_max(&state->max_dirty_thresh, state->dirty_thresh);
    keep_max(&state->max_dirty_limit, state->dirty_limit);
    return 0;
}

int mqi_wb_throttle(struct tracepoint__writeback__balance_dirty_pages *args)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!tgid_traced(tgid))
        return 0;
    struct throttle_key key = {.tgid = tgid, .cpu = bpf_get_smp_processor_id()};
    struct throttle zero = {};
    struct throttle *throttle;
    if (writing_half())
        throttle = mqi_throttles_1.lookup_or_try_init(&key, &zero);
    else
        throttle = mqi_throttles_0.lookup_or_try_init(&key, &zero);
    if (!throttle) {
        struct writeback_totals *totals = totals_of_session();
        if (totals)
            __sync_fetch_and_add(&totals->lost_records, 1);
        return 0;
    }
    throttle->checks++;
    if (!throttle->comm[0])
        bpf_get_current_comm(&throttle->comm, sizeof(throttle->comm));
    s64 pause = args->pause;
    if (pause <= 0)
        return 0;  /* under its rate limit: the writer goes on without sleeping */
    throttle->pauses++;
    throttle->pause_ms += pause;
    if ((u64)pause <= throttle->max_pause_ms)
        return 0;
    throttle->max_pause_ms = pause;
    throttle->dirty = args->dirty;
    throttle->setpoint = args->setpoint;
    throttle->limit = args->limit;
    throttle->wb_dirty = args->wb_dirty;
    throttle->task_ratelimit = args->task_ratelimit;
    throttle->dirty_ratelimit = args->dirty_ratelimit;
    return 0;
}
